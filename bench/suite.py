"""Side-by-side SSE benchmark: unifrost against nchan and sse-starlette (``make bench``).

Runs scenarios (a)-(e) (see :mod:`bench.scenarios`) against every server in the
same invocation, scenario by scenario so that every server of a scenario sees
the same machine state. Each scenario runs in rounds (three by default), every
server once per round, so the servers take turns; the table shows each
metric's median over the rounds, and the worst round for lost, duplicated and
out-of-order messages. Servers are pinned to one core and the load generator
(and this process, which publishes) to another. Prints one table with ratios
against each peer and PASS/FAIL per target, and writes it with every raw number
of every round to ``bench/results/latest.json`` (plus a time-stamped copy).

    python -m bench.suite                                  # everything
    python -m bench.suite --scenarios a,c --servers unifrost,nchan
    python -m bench.suite --rounds 1 --scale 0.1           # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import floor_reference, judge_targets, machine, render, source_digest
from bench.rounds import best_attempt, combine_rounds
from bench.scenarios import SCENARIOS, RunConfig, Scenario, run
from bench.servers import ROOT, SERVERS, UNIFROST_ENV, Nchan, ServerSet
from bench.shield import shielded
from bench.starlette_app import PING_SECONDS

RESULTS_DIR = ROOT / "bench" / "results"
# Enough for 20k streams in two processes; more would only grow nginx's tables.
_FD_CAP = 65536
#: A run is repeated when other work took more than this share of a pinned core.
NOISE_LIMIT = 0.10


def raise_open_files() -> int:
    """Raise the soft open-file limit to the hard one; returns the usable limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = _FD_CAP if hard == resource.RLIM_INFINITY else min(hard, _FD_CAP)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    return limit


def _summary(metrics: dict[str, Any]) -> str:
    if metrics.get("status") != "ok":
        return str(metrics.get("status"))
    parts = []
    if "deliveries_per_cpu_s" in metrics:
        parts.append(f"{metrics['deliveries_per_cpu_s']:,} deliveries/CPU-s")
    if "latency_p99_ms" in metrics:
        parts.append(f"p99 {metrics['latency_p99_ms']} ms")
    if "lost" in metrics:
        parts.append(f"lost {metrics['lost']} dup {metrics['duplicated']}")
    parts.append(f"connect {metrics.get('connect_s')} s")
    parts.append(f"RSS/stream {metrics.get('rss_per_stream_kib')} KiB")
    parts.append(f"other work {metrics.get('noise', 0.0):.0%}")
    return ", ".join(parts)


def run_quietly(
    scenario: Scenario, server_cls: type[ServerSet], config: RunConfig, retries: int
) -> dict[str, Any]:
    """One round of ``scenario`` on ``server_cls``, run again when it went wrong."""

    def run_once() -> dict[str, Any]:
        began = time.monotonic()
        metrics = run(scenario, server_cls, config)
        metrics["run_s"] = round(time.monotonic() - began, 1)
        print(f"    {_summary(metrics)} [{metrics['run_s']} s]", file=sys.stderr, flush=True)
        return metrics

    def again(reason: str) -> None:
        print(f"    {reason}: again", file=sys.stderr)

    return best_attempt(run_once, retries, NOISE_LIMIT, again)


def _settings() -> dict[str, Any]:
    """How each server was configured, for the artefact."""
    return {
        "unifrost_env": UNIFROST_ENV,
        "nchan": {
            "workers": "1 (2 when one cannot hold every stream's file)",
            "nchan_message_buffer_length": Nchan.buffer_length,
            "nchan_message_timeout": Nchan.message_timeout,
            "nchan_shared_memory_size": Nchan.shm_size,
            "nchan_subscriber_first_message": "newest",
        },
        "sse_starlette": {
            "ping_seconds": PING_SECONDS,
            "server": "uvicorn[standard]: uvloop + httptools",
        },
    }


def _rounds_note(rounds: int) -> str:
    if rounds == 1:
        return "one run each; "
    return f"median of {rounds} rounds (lost/dup/out-of-order and other work: worst round)\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="e.g. a,b,c,d,e")
    parser.add_argument("--servers", default=",".join(SERVERS), help="first one is the subject")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink streams and topics")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of each scenario per server, taking turns; the table shows medians",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="runs again when a run failed or other work disturbed it",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="unifrost's event_loop setting",
    )
    parser.add_argument(
        "--log-level",
        choices=("warning", "info"),
        default="warning",
        help="unifrost's log.level: warning matches nginx's error_log warn and access_log off; "
        "info adds the SPEC's line per request and three per stream",
    )
    parser.add_argument(
        "--shield",
        action="store_true",
        help="keep every other movable thread off the servers' core while the suite runs",
    )
    args = parser.parse_args(argv)
    UNIFROST_ENV["UNIFROST_EVENT_LOOP"] = args.event_loop
    UNIFROST_ENV["UNIFROST_LOG__LEVEL"] = args.log_level

    keys = [k for k in args.scenarios.split(",") if k]
    names = [n for n in args.servers.split(",") if n]
    unknown = [k for k in keys if k not in SCENARIOS] + [n for n in names if n not in SERVERS]
    if unknown:
        parser.error(f"unknown scenario/server: {', '.join(unknown)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    pinned = (os.cpu_count() or 1) > max(args.server_cpu, args.client_cpu)
    if not pinned:
        print("warning: not enough cores to pin; running unpinned", file=sys.stderr)
    if pinned:
        os.sched_setaffinity(0, {args.client_cpu})
    config = RunConfig(
        server_cpu=args.server_cpu if pinned and shutil.which("taskset") else None,
        client_cpu=args.client_cpu if pinned else None,
        fd_limit=raise_open_files(),
        payload_bytes=args.payload_bytes,
    )

    load_before = os.getloadavg()
    source_before = source_digest()
    if load_before[0] > 0.5:
        print(
            f"warning: load average {load_before[0]:.2f}: other work shares these cores",
            file=sys.stderr,
        )
    started = datetime.now(UTC)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    titles: dict[str, str] = {}
    shielding = args.shield and config.server_cpu is not None
    with shielded(config.server_cpu) if shielding else nullcontext(0) as moved:
        if shielding:
            print(f"shield: {moved} threads kept off core {config.server_cpu}", file=sys.stderr)
        for key in keys:
            scenario = SCENARIOS[key].scaled(args.scale)
            titles[key] = scenario.title
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for round_number in range(1, args.rounds + 1):
                of = f", round {round_number}/{args.rounds}" if args.rounds > 1 else ""
                for name in names:
                    print(f"({key}) {scenario.title} — {name}{of} ...", file=sys.stderr, flush=True)
                    rounds[name].append(run_quietly(scenario, SERVERS[name], config, args.retries))
            results[key] = {name: combine_rounds(runs) for name, runs in rounds.items()}

    info = machine()
    if info["unifrost_source_sha256"] != source_before:
        # The numbers then belong to two versions of the code: say so.
        print("warning: unifrost's source changed during the run", file=sys.stderr)
        info["unifrost_source_sha256_at_start"] = source_before
    shield_note = f" (other threads kept off core {config.server_cpu})" if shielding else ""
    heading = (
        f"SSE fan-out, side by side — {started:%Y-%m-%d %H:%M} UTC — {info['cpu_model']}, "
        f"{info['cores']} cores, Linux {info['kernel']}, unifrost source "
        f"{info['unifrost_source_sha256']} on {args.event_loop}, log level {args.log_level}\n"
        f"servers on core {config.server_cpu}, load generator on core {config.client_cpu}"
        f"{shield_note}; "
        f"{_rounds_note(args.rounds)}ratio = unifrost ÷ peer; "
        f"↑ higher is better, ↓ lower is better"
    )
    table = render(results, titles, names)
    print(f"\n{heading}\n\n{table}")

    artefact = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round((datetime.now(UTC) - started).total_seconds(), 1),
        "command": " ".join(
            ["python -m bench.suite", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": info,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "config": {
            "server_cpu": config.server_cpu,
            "client_cpu": config.client_cpu,
            "fd_limit": config.fd_limit,
            "payload_bytes": config.payload_bytes,
            "scale": args.scale,
            "rounds": args.rounds,
            "shield": shielding,
            "scenarios": {k: titles[k] for k in keys},
            "servers": _settings(),
        },
        "results": results,
        "targets": judge_targets(results),
        "reference": floor_reference(results),
        "table": heading + "\n\n" + table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(artefact, indent=2, ensure_ascii=False) + "\n"
    args.out.write_text(text)
    stamped = args.out.with_name(f"run-{started:%Y%m%dT%H%M%SZ}.json")
    stamped.write_text(text)
    print(f"\nwritten: {args.out} and {stamped.name}", file=sys.stderr)
    failed = [n for k in keys for n in names if results[k][n]["status"].startswith("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
