"""The ``unifrost`` command line (also ``python -m service``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from service import __version__
from service.config import ConfigError, load_settings

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unifrost", description="Stream pub/sub broker messages to browsers over SSE."
    )
    parser.add_argument("--version", action="version", version=f"unifrost {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", metavar="FILE", help="YAML configuration file")
    serve.add_argument(
        "--broker",
        help=(
            "broker URL (memory://, kafka://, amqp://, nats://, redis://, mqtt://, sqs://, "
            "gcppubsub://)"
        ),
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help="public listener")
    serve.add_argument("--admin-listen", metavar="HOST:PORT", help="admin listener")
    serve.add_argument("--admin-token", metavar="TOKEN", help="bearer token for the admin API")
    serve.add_argument("--consumer-ttl", metavar="DURATION", help="e.g. 60s")
    serve.add_argument("--heartbeat", metavar="DURATION", help="e.g. 15s")
    serve.add_argument("--demo", action="store_true", default=None, help="demo page + publisher")
    serve.add_argument("--log-format", choices=None, metavar="json|console")
    serve.add_argument("--log-level", metavar="LEVEL")
    serve.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration and broker URL, then exit (0 when valid)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help()
        return EXIT_CONFIG
    overrides = {
        "broker": args.broker,
        "listen": args.listen,
        "admin_listen": args.admin_listen,
        "admin_token": args.admin_token,
        "consumer_ttl": args.consumer_ttl,
        "heartbeat": args.heartbeat,
        "demo": args.demo,
        "log.format": args.log_format,
        "log.level": args.log_level,
    }
    try:
        settings = load_settings(
            args.config, os.environ, overrides, stdout_is_tty=sys.stdout.isatty()
        )
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"unifrost: config: {problem}", file=sys.stderr)
        return EXIT_CONFIG

    from service.brokers import BrokerError, open_broker
    from service.log import configure_logging
    from service.server import run

    try:
        broker = open_broker(settings.broker, settings)
    except ValueError as exc:
        print(f"unifrost: config: broker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print("unifrost: configuration OK")
        return 0
    configure_logging(settings.log.format, settings.log.level)
    try:
        run(settings, broker)
    except (OSError, BrokerError) as exc:  # address in use, broker unreachable, ...
        print(f"unifrost: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
