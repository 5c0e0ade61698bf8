"""Server CPU per publish, per stream connect and per hang-up: the service's fixed costs.

``make bench`` measures whole scenarios; this isolates the per-request costs
that decide scenarios (b), (c), (e) and the connect time, so a change to one of
the paths can be measured before and after on the same machine::

    python -m bench.costs                       # this checkout
    python -m bench.costs --root ../other-tree  # another checkout, same load
    python -m bench.costs --nchan               # nchan's costs beside it
    python -m bench.costs --floors              # do-nothing servers (bench/floors.py)
    python -m bench.costs --log-level info      # unifrost with its per-request lines
    python -m bench.costs --publishes 200000    # a publish's cost to a tenth of a µs

Each server runs pinned to core 0, the load to core 1 (as in ``make bench``).
A publish is ``POST /publish?topic=`` (64-byte body, 100 topics, no streams)
over 8 keep-alive connections; a connect is ``GET /events?topics=`` creating its
own consumer, 10,000 of them through a window of 64; a hang-up is one of those
10,000 streams closed by the client all at once (as in (e)'s storm), counted
until the server is idle again. CPU is the server's ``utime + stime`` over the
measured requests only; the machine's speed moves it from run to run, so
compare trees within one invocation, several times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.floors import KINDS as FLOORS

_PUBLISHES = 20_000
_CONNECTS = 10_000
#: What each server is measured on; the do-nothing floors cannot hang up a wave.
_ALL = ("publish", "connect", "hang-up")
_FLOOR = _ALL[:2]


def _measure(root: Path, what: str, count: int, server: str, log_level: str) -> float:
    """Run one measurement in a fresh interpreter whose imports come from ``root``."""
    code = f"""
import os, resource, sys, time
sys.path.insert(0, {str(root)!r})
os.sched_setaffinity(0, {{1}})
_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
from bench.servers import UNIFROST_ENV, Nchan, Unifrost
UNIFROST_ENV["UNIFROST_LOG__LEVEL"] = {log_level!r}
from bench.publisher import Publisher
from bench.loadgen import LoadGenerator

def main():
    kind, _, floor = {server!r}.partition(":")
    if floor:
        from bench.servers import Floor
        srv = Floor(floor, 1, 0, 20000)
    else:
        srv = Nchan(1, 0, 20000) if kind == "nchan" else Unifrost(1, 0, 20000)
    with srv:
        time.sleep(0.5)
        if {what!r} == "publish":
            topics = [f"t{{i}}" for i in range(100)]
            pub = Publisher("127.0.0.1", srv.publish_port, topics, 8, 64)
            pub.run([(i % 100, i) for i in range(2000)])  # warm-up
            before = sum(srv.cpu_times())
            stats = pub.run([(i % 100, i + 2000) for i in range({count})])
            used = sum(srv.cpu_times()) - before
            pub.close()
            assert stats.errors == 0, stats.first_error
        else:
            lg = LoadGenerator(srv.protocol, srv.stream_ports, ["bench-0"], {count},
                               per_process=19000, window=64, cpu=1)
            before = sum(srv.cpu_times())
            lg.connect()
            used = sum(srv.cpu_times()) - before
            if {what!r} == "hang-up":
                time.sleep(0.5)
                before = sum(srv.cpu_times())
                lg.close()  # every stream's socket closed at once
                used = settled(srv) - before
            else:
                lg.close()
    print(used / {count} * 1e6)

def settled(srv):
    # The server's CPU seconds once it has stopped using any (it is idle again).
    last = sum(srv.cpu_times())
    for _ in range(100):
        time.sleep(0.3)
        now = sum(srv.cpu_times())
        if now == last:
            return now
        last = now
    raise RuntimeError("the server never went idle")

if __name__ == "__main__":
    main()
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{what} on {root}: {out.stderr.strip()[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", action="append", type=Path, help="a checkout to measure")
    parser.add_argument("--nchan", action="store_true", help="measure nchan's costs too")
    parser.add_argument(
        "--floors", action="store_true", help="measure the do-nothing servers of bench/floors.py"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement")
    parser.add_argument(
        "--publishes",
        type=int,
        default=_PUBLISHES,
        help="publishes measured (the CPU clock's 10 ms step is 0.5 µs of the default 20,000)",
    )
    parser.add_argument(
        "--log-level",
        choices=("warning", "info"),
        default="warning",
        help="unifrost's log.level, as bench.suite's option",
    )
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent.parent
    roots = [here, *(r.resolve() for r in args.root or [])]
    counts = {"publish": args.publishes, "connect": _CONNECTS, "hang-up": _CONNECTS}
    rows: list[tuple[str, str, list[float]]] = []
    for _ in range(args.repeat):  # interleaved, so drift in machine speed hits all alike
        for root in roots:
            for what in _ALL:
                value = _measure(root, what, counts[what], "unifrost", args.log_level)
                _add(rows, f"unifrost {root}", what, value)
        if args.nchan:
            for what in _ALL:
                cost = _measure(here, what, counts[what], "nchan", args.log_level)
                _add(rows, "nchan", what, cost)
        for kind in FLOORS if args.floors else ():
            for what in _FLOOR:
                value = _measure(here, what, counts[what], f"floor:{kind}", args.log_level)
                _add(rows, f"floor: {kind}", what, value)
    print(f"{'server':<60} {'what':<8} µs of server CPU each (runs)")
    for name, what, values in rows:
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:<60} {what:<8} {min(values):.1f} ({runs})")
    measured = time.strftime("measured %Y-%m-%d %H:%M UTC", time.gmtime())
    print(measured, f"on {os.cpu_count()} cores, unifrost at log level {args.log_level}")
    return 0


def _add(rows: list[tuple[str, str, list[float]]], name: str, what: str, value: float) -> None:
    for row in rows:
        if row[0] == name and row[1] == what:
            row[2].append(value)
            return
    rows.append((name, what, [value]))


if __name__ == "__main__":
    sys.exit(main())
