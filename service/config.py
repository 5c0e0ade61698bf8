"""Service configuration: the settings model and how it is loaded.

This module owns every configuration key, its default and its validation.
Values come from three layers, later ones winning: a YAML file, environment
variables named ``UNIFROST_<KEY>`` (nested keys joined by ``__``) and
command-line overrides keyed by dotted name. Every invalid value is reported
at once in a single :class:`ConfigError`, one line per problem.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from ipaddress import IPv4Network, IPv6Network
from types import MappingProxyType
from typing import Any, NamedTuple

import yaml

ENV_PREFIX = "UNIFROST_"

_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?")
_DURATION_UNITS: dict[str | None, Fraction] = {
    None: Fraction(1),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}
_DURATION_HINT = "(use 500ms, 15s, 2m or seconds)"

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)?")
_SIZE_UNITS: dict[str | None, int] = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_HINT = "(use 1MiB, 64KiB, 1MB or bytes)"

_INT_RE = re.compile(r"[+-]?\d+")
_ADDRESS_HINT = "(use host:port or [v6]:port)"


class ConfigError(Exception):
    """Configuration is invalid; ``problems`` holds one line per issue."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


class Address(NamedTuple):
    """A listening address; ``host`` never carries IPv6 brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def _doc(text: str) -> dict[str, str]:
    """Field metadata holding a key's description (rendered by ``service.reference``)."""
    return {"doc": " ".join(text.split())}


@dataclass(frozen=True)
class BufferSettings:
    """The replay buffer each consumer keeps, so a client that reconnects misses nothing."""

    max_messages: int = field(
        default=1000,
        metadata=_doc(
            """Messages each consumer keeps for replay. When a new message would pass this
            bound the oldest one leaves the buffer; if no stream had been sent it yet, it is
            lost (counted in `unifrost_messages_dropped_total{reason="buffer_full"}`) and a
            client resuming from before it gets a `resume-gap` error frame."""
        ),
    )
    max_bytes: int = field(
        default=1048576,
        metadata=_doc(
            """Bytes of encoded frames each consumer keeps for replay; the oldest messages
            leave first, as with `buffer.max_messages`. Whichever bound is reached first
            applies. Frames are shared by reference between consumers, so this caps what
            one consumer can pin in memory."""
        ),
    )


@dataclass(frozen=True)
class LimitSettings:
    """Bounds that protect the process from a runaway app backend."""

    max_consumers: int | None = field(
        default=None,
        metadata=_doc(
            """Most consumers one process keeps. Past it `POST /consumers` (and `GET /events`
            creating a consumer with `auto_create_consumers`) answers 429 `limit-exceeded`.
            Unset, empty or `0` means no limit."""
        ),
    )
    max_subscriptions_per_consumer: int = field(
        default=100,
        metadata=_doc(
            """Most topics one consumer may be subscribed to. Topics added past it are
            refused one by one with the per-topic error `limit-exceeded`; the others are
            subscribed."""
        ),
    )


@dataclass(frozen=True)
class ClientSubscriptionSettings:
    """Browsers changing their own subscriptions on the public listener (off by default)."""

    enabled: bool = field(
        default=False,
        metadata=_doc(
            """Serve `POST /subscriptions` on the public listener, where a browser holding a
            consumer id adds and removes topics itself (`{"consumer_id", "add", "remove"}`).
            Every added topic must match `client_subscriptions.allow`. Demo mode turns this
            on for `demo/*` when it is not configured."""
        ),
    )
    allow: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            """Glob patterns (`*`, `?`, `[...]`, case-sensitive, `*` also matches `/` and
            `.`) of the topics clients may add through `POST /subscriptions`, or name in
            `topics=` when `auto_create_consumers` creates a consumer. Any other topic is
            refused with code `forbidden`. Empty allows nothing."""
        ),
    )


@dataclass(frozen=True)
class LogSettings:
    """The log lines the server writes to stdout."""

    format: str = field(
        default="json",
        metadata=_doc(
            """`json`: one JSON object per line (`timestamp`, `level`, `event` and the
            event's context), for log shippers. `console`: aligned human-readable lines.
            When unset, `console` is used if stdout is a terminal and `json` otherwise."""
        ),
    )
    level: str = field(
        default="info",
        metadata=_doc(
            """Lowest level written, for our events and for library records alike:
            `info` writes a line per control-API call (every `POST /publish` too) and
            per stream opened and closed; `warning` keeps only trouble (broker errors,
            outages, drain timeouts) and spares a busy server the CPU of those lines;
            `debug` also lets the libraries' debug records through. Lines are written
            together, at most 0.1 s after they were logged."""
        ),
    )


@dataclass(frozen=True)
class RabbitMQSettings:
    """Options of the RabbitMQ driver (`amqp://` and `amqps://` broker URLs)."""

    exchange: str = field(
        default="amq.topic",
        metadata=_doc(
            """Topic exchange that topics are routing keys on. Each process binds its own
            exclusive queue to it once per subscribed topic, and `POST /publish` publishes
            to it. `amq.topic` must exist (RabbitMQ creates it); any other name is declared
            as a durable topic exchange."""
        ),
    )


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSettings:
    """Client options for ``kafka://`` brokers, passed through to aiokafka."""

    client_id: str = field(
        default="unifrost",
        metadata=_doc(
            """Client id sent with every request to the Kafka brokers, as seen in their
            logs, quotas and request metrics."""
        ),
    )
    security_protocol: str = field(
        default="PLAINTEXT",
        metadata=_doc(
            """How to talk to the brokers: `PLAINTEXT`, `SSL` (TLS), `SASL_PLAINTEXT` (SASL
            authentication without TLS) or `SASL_SSL` (both). The SASL ones need
            credentials; TLS files are only accepted with `SSL` and `SASL_SSL`."""
        ),
    )
    sasl_mechanism: str = field(
        default="PLAIN",
        metadata=_doc(
            """SASL mechanism with a `SASL_*` security protocol: `PLAIN`, `SCRAM-SHA-256` or
            `SCRAM-SHA-512`."""
        ),
    )
    sasl_username: str | None = field(
        default=None,
        metadata=_doc(
            """SASL user name. When set, it and `kafka.sasl_password` win over credentials
            in the broker URL (`kafka://user:password@host:9092`). Setting SASL credentials
            without a `SASL_*` security protocol is refused at startup."""
        ),
    )
    # repr=False: settings may end up in a log line or a traceback.
    sasl_password: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            """SASL password, used with `kafka.sasl_username`. It never appears in logs or
            error messages; prefer the environment variable to the config file."""
        ),
    )
    ssl_cafile: str | None = field(
        default=None,
        metadata=_doc(
            """PEM file of the certificate authorities that sign the brokers' certificates.
            Unset, the system's trusted CAs are used. The file must exist at startup."""
        ),
    )
    ssl_certfile: str | None = field(
        default=None,
        metadata=_doc(
            """PEM client certificate for brokers that require TLS client authentication
            (it may also hold the private key)."""
        ),
    )
    ssl_keyfile: str | None = field(
        default=None,
        metadata=_doc(
            """PEM private key of `kafka.ssl_certfile`, when the certificate file does not
            hold it. Needs `kafka.ssl_certfile`."""
        ),
    )


_DEFAULT_LISTEN = Address("0.0.0.0", 8080)
_DEFAULT_ADMIN_LISTEN = Address("127.0.0.1", 8081)


def _default_trusted_proxies() -> tuple[IPv4Network | IPv6Network, ...]:
    return (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"))


@dataclass(frozen=True)
class Settings:
    """Every configuration key; nested dataclasses are the dotted sections."""

    broker: str = field(
        default="memory://",
        metadata=_doc(
            """URL of the broker messages come from and `POST /publish` goes to; its scheme
            picks the driver: `memory://` (in-process), `kafka://`, `amqp://`/`amqps://`
            (RabbitMQ), `nats://`/`tls://`, `redis://`/`rediss://`, `mqtt://`/`mqtts://`,
            `sqs://` or `gcppubsub://`. Driver options go in the URL's query string.
            Credentials in the URL never appear in logs, metrics or error frames. An
            unreachable broker at startup makes `unifrost serve` exit 1."""
        ),
    )
    listen: Address = field(
        default=_DEFAULT_LISTEN,
        metadata=_doc(
            """Public listener: `GET /events`, the browser client `/unifrost.js`,
            `/healthz`, `/readyz`, `POST /subscriptions` when client subscriptions are on,
            and the demo page in demo mode."""
        ),
    )
    admin_listen: Address = field(
        default=_DEFAULT_ADMIN_LISTEN,
        metadata=_doc(
            """Admin listener: the control API (`/consumers`, `/publish`), `/metrics`,
            `/healthz` and `/readyz`. Keep it private: it can create and delete consumers
            and publish. The server refuses to start with a non-loopback address and no
            `admin_token`."""
        ),
    )
    admin_token: str | None = field(
        default=None,
        metadata=_doc(
            """Bearer token for the admin listener. When set, every admin route except
            `/healthz` and `/readyz` needs `Authorization: Bearer <token>` and answers 401
            JSON without it. Empty means no token."""
        ),
    )
    consumer_ttl: float = field(
        default=60.0,
        metadata=_doc(
            """How long a consumer without an open stream is kept: it is evicted this long
            after it was created or after its last stream closed, whichever is later. A
            client reconnecting within it finds its subscriptions and the messages that
            arrived meanwhile."""
        ),
    )
    heartbeat: float = field(
        default=15.0,
        metadata=_doc(
            """Longest silence on a stream: after this long without a frame the server
            writes a `:` comment, so proxies keep the connection open and a dead client is
            found. Keep it below the read timeout of any proxy in front."""
        ),
    )
    retry: float = field(
        default=3.0,
        metadata=_doc(
            """Reconnection delay sent to clients in the stream's first `retry:` line,
            which browsers wait before reconnecting a dropped stream. On shutdown each stream
            gets a random delay between `retry` and twice `retry`, to spread the reconnects."""
        ),
    )
    event_name: str = field(
        default="message",
        metadata=_doc(
            """SSE event type of topic frames: `message` (every frame is `event: message`,
            as in the Go unifrost) or `topic` (`event: <topic>`, so a page can
            `addEventListener` per topic). Info, error and closed frames stay `message`."""
        ),
    )
    buffer: BufferSettings = field(
        default_factory=BufferSettings,
        metadata=_doc(
            """The replay buffer each consumer keeps, so a client that reconnects within
            `consumer_ttl` first gets what it missed; both bounds apply."""
        ),
    )
    max_write_buffer: int = field(
        default=1048576,
        metadata=_doc(
            """Unsent bytes after which a stream counts as a slow reader and is closed at
            once (`unifrost_slow_consumer_disconnects_total`). The consumer stays and the
            client resumes from its buffer when it reconnects; nobody else waits for it.
            The replay sent when a stream opens does not count toward it."""
        ),
    )
    max_message_bytes: int = field(
        default=1048576,
        metadata=_doc(
            """Largest `POST /publish` body; a larger one is answered 413. The Kafka driver
            also sizes its producer requests from it."""
        ),
    )
    limits: LimitSettings = field(
        default_factory=LimitSettings,
        metadata=_doc(
            """Bounds on consumers and subscriptions, protecting the process from a runaway
            app backend."""
        ),
    )
    auto_create_consumers: bool = field(
        default=False,
        metadata=_doc(
            """Let `GET /events` without an `id` create a consumer for the client, which
            learns its id from the info frame. `topics=a,b` subscribes it to those topics,
            each checked against `client_subscriptions.allow` (403 otherwise)."""
        ),
    )
    client_subscriptions: ClientSubscriptionSettings = field(
        default_factory=ClientSubscriptionSettings,
        metadata=_doc(
            """Whether browsers may change their consumer's subscriptions themselves, and to
            which topics (off by default: only the app backend, through the control API)."""
        ),
    )
    cors_origins: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            """Origins (`https://app.example.com`, exact match) whose pages may read
            streams and post client subscriptions across origins; they get
            `Access-Control-Allow-Origin` with credentials allowed. Empty: same origin
            only."""
        ),
    )
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = field(
        default_factory=_default_trusted_proxies,
        metadata=_doc(
            """Reverse proxies whose `X-Forwarded-For` or `X-Real-IP` headers are believed
            when logging a client's address (`remote_ip` in `stream.opened` and
            `http.request`). From the right of `X-Forwarded-For`, the first address that
            is not a trusted proxy is the client. Addresses or CIDR networks."""
        ),
    )
    demo: bool = field(
        default=False,
        metadata=_doc(
            """Demo mode: a demo page at `/` on the public listener, `POST
            /demo/consumers` for it, and a publisher sending to a few `demo/*` topics every
            second. It also turns on client subscriptions for `demo/*` unless
            `client_subscriptions` is configured. Not for production."""
        ),
    )
    log: LogSettings = field(
        default_factory=LogSettings,
        metadata=_doc(
            """Format and level of the log lines written to stdout; Tornado's and the client
            libraries' records go through the same renderer."""
        ),
    )
    drain_timeout: float = field(
        default=10.0,
        metadata=_doc(
            """Longest graceful shutdown after SIGTERM or SIGINT: how long open connections
            get to take their goodbye frames before they are cut. Give your process manager
            a stop timeout above it."""
        ),
    )
    event_loop: str = field(
        default="asyncio",
        metadata=_doc(
            """The event loop `unifrost serve` runs on: `asyncio` (the standard library's)
            or `uvloop` (needs `pip install 'unifrost[uvloop]'`), which took a few percent
            off the CPU of a publish's fan-out and of a stream's opening on one benchmark
            machine and nothing measurable on another (see the performance page);
            behaviour is the same."""
        ),
    )
    rabbitmq: RabbitMQSettings = field(
        default_factory=RabbitMQSettings,
        metadata=_doc(
            """Options of the RabbitMQ driver (`amqp://`, `amqps://`). Connection options
            such as `heartbeat` go in the broker URL's query string."""
        ),
    )
    kafka: KafkaSettings = field(
        default_factory=KafkaSettings,
        metadata=_doc(
            """Options of the Kafka driver (`kafka://`), passed to aiokafka. The bootstrap
            servers come from the broker URL; these keys set the client id, the security
            protocol, SASL credentials and TLS files."""
        ),
    )


# --- public value parsers -------------------------------------------------


def parse_duration(value: object) -> float:
    """Parse ``500ms``, ``15s``, ``2m``, ``1h`` or plain seconds into seconds."""
    try:
        seconds = _duration_or_none(value)
    except (ValueError, OverflowError):  # absurdly long digit strings or huge ints
        seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r} {_DURATION_HINT}")
    return seconds


def _duration_or_none(value: object) -> float | None:
    # bool is an int subclass, but "heartbeat: true" is a mistake, not 1 second.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    match = _DURATION_RE.fullmatch(value.strip().lower())
    if match is None:
        return None
    return float(Fraction(match.group(1)) * _DURATION_UNITS[match.group(2)])


def parse_size(value: object) -> int:
    """Parse ``64KiB``, ``1MiB``, ``1GiB``, ``1MB`` or plain bytes into bytes."""
    try:
        nbytes = _size_or_none(value)
    except ValueError:  # digit strings beyond Python's int conversion limit
        nbytes = None
    if nbytes is None or nbytes < 0:
        raise ValueError(f"invalid size {value!r} {_SIZE_HINT}")
    return nbytes


def _size_or_none(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    match = _SIZE_RE.fullmatch(value.strip().lower())
    if match is None or match.group(2) not in _SIZE_UNITS:
        return None
    number, unit = match.group(1), match.group(2)
    nbytes = Fraction(number) * _SIZE_UNITS[unit]
    # A fraction is only meaningful with a unit, and must land on a whole byte.
    if nbytes.denominator != 1 or (unit is None and "." in number):
        return None
    return int(nbytes)


# --- private value parsers ------------------------------------------------


def _parse_int(value: object) -> int:
    """An integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError(f"expected an integer, got {value!r}")


def _parse_bool(value: object) -> bool:
    """A boolean: ``true``/``false``, ``yes``/``no``, ``on``/``off`` or ``1``/``0``."""
    if isinstance(value, bool):
        return value
    # YAML "1"/"0" arrive as ints; accept them so files and env agree.
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError(f"expected a boolean (true/false/yes/no/on/off/1/0), got {value!r}")


def _parse_str(value: object) -> str:
    """A string."""
    # Numbers are refused rather than converted: YAML would already have
    # mangled values like 0123 (octal) or 1e3 before we could see them.
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {value!r}")


def _parse_str_list(value: object) -> tuple[str, ...]:
    """A list of strings; in the environment, comma-separated."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError(f"expected a list of strings or a comma-separated string, got {value!r}")


def _parse_address(value: object) -> Address:
    """An address ``host:port`` (IPv6: ``[::1]:port``); port ``0`` picks a free one."""
    text = _parse_str(value).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not _is_ipv6(host):
            raise ValueError(f"invalid address {value!r} {_ADDRESS_HINT}")
    else:
        host, sep, port = text.rpartition(":")
        # A bare IPv6 host is ambiguous with the port separator; brackets are required.
        if not sep or not host or ":" in host or any(c.isspace() for c in host):
            raise ValueError(f"invalid address {value!r} {_ADDRESS_HINT}")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid port in {value!r} (must be 0-65535)")
    return Address(host, int(port))


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _parse_networks(value: object) -> tuple[IPv4Network | IPv6Network, ...]:
    """A list of IP addresses or CIDR networks; from the environment, comma-separated."""
    networks: list[IPv4Network | IPv6Network] = []
    bad: list[str] = []
    for item in _parse_str_list(value):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            bad.append(repr(item))
    if bad:
        raise ValueError(f"invalid IP or CIDR {', '.join(bad)}")
    return tuple(networks)


# --- per-key validators ---------------------------------------------------


def _broker(value: object) -> str:
    """A broker URL ``scheme://...``."""
    url = _parse_str(value)
    if "://" not in url:
        raise ValueError(f"invalid broker URL {url!r} (expected scheme://..., e.g. memory://)")
    return url


def _optional_secret(value: object) -> str | None:
    """A string; empty means none."""
    if value is None:
        return None
    return _parse_str(value) or None


def _positive_duration(value: object) -> float:
    """A duration above zero: ``500ms``, ``15s``, ``2m``, ``1h`` or a number of seconds."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    return seconds


def _positive_size(value: object) -> int:
    """A size of at least one byte: ``64KiB``, ``1MiB``, ``1GiB``, ``1MB`` or bytes."""
    nbytes = parse_size(value)
    if nbytes < 1:
        raise ValueError(f"must be at least 1 byte, got {value!r}")
    return nbytes


def _positive_int(value: object) -> int:
    """An integer of at least 1."""
    number = _parse_int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {value!r}")
    return number


def _optional_limit(value: object) -> int | None:
    """An integer of at least 1; ``0`` or empty means no limit."""
    # None, 0 and "" all read naturally as "no limit" from YAML, env and flags.
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = _parse_int(value)
    if number < 0:
        raise ValueError(f"must be at least 1, or 0 for unlimited, got {value!r}")
    return number or None


def _non_empty_str(value: object) -> str:
    """A non-empty string."""
    text = _parse_str(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _choice(*allowed: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        word = _parse_str(value).strip().lower()
        if word not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return word

    parse.__doc__ = f"One of {_listed(allowed)} (case-insensitive)."
    return parse


def _listed(words: Iterable[str]) -> str:
    return ", ".join(f"``{word}``" for word in words)


def _upper_choice(*allowed: str) -> Callable[[object], str]:
    # For values whose canonical spelling is upper case (Kafka's SASL_SSL, PLAIN, ...).
    def parse(value: object) -> str:
        word = _parse_str(value).strip().upper()
        if word not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return word

    parse.__doc__ = f"One of {_listed(allowed)} (case-insensitive)."
    return parse


def _optional_str(value: object) -> str | None:
    """A string; empty means none."""
    if value is None:
        return None
    return _parse_str(value).strip() or None


def _optional_password(value: object) -> str | None:
    """A string (a secret: never shown in messages); empty means none."""
    # Like _optional_secret, but a wrong type never echoes the value into the error.
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a string (got a value of type {type(value).__name__})")
    return value or None


def _optional_file(value: object) -> str | None:
    """The path of an existing file."""
    path = _optional_str(value)
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"no such file {path!r}")
    return path


_LOOPS = ("asyncio", "uvloop")


def _event_loop(value: object) -> str:
    name = _choice(*_LOOPS)(value)
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError("uvloop is not installed (pip install 'unifrost[uvloop]')")
    return name


_event_loop.__doc__ = f"One of {_listed(_LOOPS)} (case-insensitive); `uvloop` must be installed."


# Every configuration key, by dotted name. Defaults live on the dataclasses.
_PARSERS: dict[str, Callable[[object], object]] = {
    "broker": _broker,
    "listen": _parse_address,
    "admin_listen": _parse_address,
    "admin_token": _optional_secret,
    "consumer_ttl": _positive_duration,
    "heartbeat": _positive_duration,
    "retry": _positive_duration,
    "event_name": _choice("message", "topic"),
    "buffer.max_messages": _positive_int,
    "buffer.max_bytes": _positive_size,
    "max_write_buffer": _positive_size,
    "max_message_bytes": _positive_size,
    "limits.max_consumers": _optional_limit,
    "limits.max_subscriptions_per_consumer": _positive_int,
    "auto_create_consumers": _parse_bool,
    "client_subscriptions.enabled": _parse_bool,
    "client_subscriptions.allow": _parse_str_list,
    "cors_origins": _parse_str_list,
    "trusted_proxies": _parse_networks,
    "demo": _parse_bool,
    "log.format": _choice("json", "console"),
    "log.level": _choice("debug", "info", "warning", "error"),
    "drain_timeout": _positive_duration,
    "event_loop": _event_loop,
    "rabbitmq.exchange": _non_empty_str,
    "kafka.client_id": _non_empty_str,
    "kafka.security_protocol": _upper_choice(*KAFKA_SECURITY_PROTOCOLS),
    "kafka.sasl_mechanism": _upper_choice(*KAFKA_SASL_MECHANISMS),
    "kafka.sasl_username": _optional_str,
    "kafka.sasl_password": _optional_password,
    "kafka.ssl_cafile": _optional_file,
    "kafka.ssl_certfile": _optional_file,
    "kafka.ssl_keyfile": _optional_file,
}
_SECTIONS = frozenset(key.split(".")[0] for key in _PARSERS if "." in key)


def key_parsers() -> Mapping[str, Callable[[object], object]]:
    """Every key by dotted name, with its parser; a parser's docstring says what it accepts."""
    return MappingProxyType(_PARSERS)


# --- raw value sources ----------------------------------------------------


def _read_file(path: str, raw: dict[str, object], problems: list[str]) -> None:
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as exc:
        problems.append(f"{path}: cannot read config file: {exc.strerror or exc}")
        return
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: cannot read config file: not UTF-8 text ({exc.reason})")
        return
    except yaml.YAMLError as exc:
        problems.append(f"{path}: invalid YAML: {_one_line(exc)}")
        return
    if document is None:  # an empty or all-comments file configures nothing
        return
    if not isinstance(document, Mapping):
        kind = type(document).__name__
        problems.append(f"{path}: top level must be a mapping of keys, got {kind}")
        return
    _flatten(document, "", raw, problems)


def _one_line(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _flatten(
    mapping: Mapping[object, object], prefix: str, raw: dict[str, object], problems: list[str]
) -> None:
    for name, value in mapping.items():
        key = prefix + str(name).lower()
        if key in _PARSERS:
            raw[key] = value
        elif key in _SECTIONS and value is None:
            continue  # "buffer:" with everything beneath commented out
        elif key in _SECTIONS and not isinstance(value, Mapping):
            problems.append(f"{key}: expected a mapping of settings, got {value!r}")
        elif isinstance(value, Mapping) and value:
            # Recurse into unknown sections too so each stray leaf is named.
            _flatten(value, key + ".", raw, problems)
        else:
            problems.append(f"unknown key '{key}'")


def _read_env(env: Mapping[str, str], raw: dict[str, object], problems: list[str]) -> None:
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            _set_known(key, value, raw, problems)


def _read_overrides(
    overrides: Mapping[str, object], raw: dict[str, object], problems: list[str]
) -> None:
    for name, value in overrides.items():
        # None stands for "flag not given", so argparse namespaces can be passed as-is.
        if value is not None:
            _set_known(name.lower(), value, raw, problems)


def _set_known(key: str, value: object, raw: dict[str, object], problems: list[str]) -> None:
    if key in _PARSERS:
        raw[key] = value
    else:
        problems.append(f"unknown key '{key}'")


# --- assembly -------------------------------------------------------------


def _parse_all(raw: Mapping[str, object], problems: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for key, parse in _PARSERS.items():  # schema order keeps messages stable
        if key in raw:
            try:
                values[key] = parse(raw[key])
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
    return values


def _check_admin_exposure(settings: Settings, problems: list[str]) -> None:
    # The admin API can drop consumers and publish; never expose it unauthenticated.
    if settings.admin_token is None and not _is_loopback(settings.admin_listen.host):
        problems.append(
            f"admin_listen: refusing non-loopback admin listener {settings.admin_listen} "
            "without admin_token"
        )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other hostname may resolve anywhere


def _build(values: Mapping[str, object], log_format: str) -> Settings:
    # Any: each value was produced by the parser for its own field, which the
    # type checker cannot see through the key-indexed table.
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, object]] = {}
    for key, value in values.items():
        section, _, name = key.rpartition(".")
        if section:
            sections.setdefault(section, {})[name] = value
        else:
            top[key] = value
    base = Settings(log=LogSettings(format=log_format))
    for section, changes in sections.items():
        top[section] = dataclasses.replace(getattr(base, section), **changes)
    return dataclasses.replace(base, **top)


def load_settings(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    *,
    stdout_is_tty: bool = False,
) -> Settings:
    """Load settings from file, then env, then overrides; raise ConfigError on any problem.

    ``env`` defaults to ``os.environ``; only ``UNIFROST_*`` variables are read.
    ``overrides`` maps dotted keys to flag values; ``None`` values are ignored.
    ``stdout_is_tty`` picks the default log format (console for a terminal).
    """
    raw: dict[str, object] = {}
    problems: list[str] = []
    if config_file is not None:
        _read_file(config_file, raw, problems)
    _read_env(os.environ if env is None else env, raw, problems)
    _read_overrides(overrides or {}, raw, problems)
    values = _parse_all(raw, problems)
    settings = _build(values, "console" if stdout_is_tty else "json")
    # Judge admin exposure only on values that parsed, to avoid a misleading extra line.
    if not {"admin_listen", "admin_token"} & (raw.keys() - values.keys()):
        _check_admin_exposure(settings, problems)
    if problems:
        raise ConfigError(problems)
    return settings
