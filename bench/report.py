"""The results table: every server side by side, ratios against each peer, targets.

Ratios are always ``unifrost / peer``; the arrow after a metric's name says
which way is better (``↑`` higher, ``↓`` lower). A target is judged only on
numbers from the same run, and a throughput target only counts when unifrost
delivered every message of that scenario.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.servers import ROOT, nginx_version

Results = dict[str, dict[str, dict[str, Any]]]  # scenario -> server -> metrics

SUBJECT = "unifrost"
PEERS = ("nchan", "sse-starlette", "python-floor")


@dataclass(frozen=True)
class Row:
    """One metric line of the table."""

    label: str
    value: Callable[[dict[str, Any]], float | str | None]
    fmt: str = "num"  # num | ms | s | kib | pct | text
    better: str = ""  # "higher" | "lower" | "" (no ratio)


def _get(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda metrics: metrics.get(key)


def _integrity(metrics: dict[str, Any]) -> str | None:
    if "lost" not in metrics:
        return None
    return f"{metrics['lost']}/{metrics['duplicated']}/{metrics['out_of_order']}"


def _cpu_split(metrics: dict[str, Any]) -> str | None:
    if "server_cpu_s" not in metrics:
        return None
    user, system = metrics["server_user_s"], metrics["server_sys_s"]
    return f"{metrics['server_cpu_s']:.2f} ({user:.2f}+{system:.2f})"


def _each_round(key: str, fmt: str) -> Callable[[dict[str, Any]], str | None]:
    """A metric's value in every round, in order (None after a single run)."""

    def value(metrics: dict[str, Any]) -> str | None:
        rounds = metrics.get("rounds")
        if not rounds:
            return None
        return " ".join(_format(run.get(key), fmt) for run in rounds)

    return value


PER_CPU = "deliveries / server CPU-s ↑"
P99 = "latency p99 ms ↓"
CONNECT = "connect all streams s ↓"
IDLE_RSS = "RSS per idle stream KiB ↓"
INTEGRITY = "lost/dup/out-of-order"

_PER_CPU_ROUNDS = Row("    each round", _each_round("deliveries_per_cpu_s", "num"), "text")
_P99_ROUNDS = Row("    each round", _each_round("latency_p99_ms", "ms"), "text")

# Shown, not judged: the same latency over every stream, whose frames wait in
# their sockets while the load generator is busy; and publish to the load
# generator's read, which adds that wait.
_OTHER_LATENCY = [
    Row("latency p99, every stream ms ↓", _get("all_latency_p99_ms"), "ms", "lower"),
    Row("read latency p50 ms ↓", _get("read_latency_p50_ms"), "ms", "lower"),
    Row("read latency p99 ms ↓", _get("read_latency_p99_ms"), "ms", "lower"),
    # Above 1, reads often took several frames, each then stamped with the
    # arrival of the last: every-stream latency errs on the late side. The
    # probes' figure should stay at 1.00.
    Row("payload frames per read", _get("frames_per_read"), "s"),
    Row("  on probe streams", _get("probe_frames_per_read"), "s"),
]

_THROUGHPUT = [
    Row(PER_CPU, _get("deliveries_per_cpu_s"), "num", "higher"),
    _PER_CPU_ROUNDS,
    Row("deliveries / s, wall ↑", _get("deliveries_per_s"), "num", "higher"),
    Row("server CPU s (user+sys) ↓", _cpu_split, "text"),
    Row("latency p50 ms ↓", _get("latency_p50_ms"), "ms", "lower"),
    Row(P99, _get("latency_p99_ms"), "ms", "lower"),
    _P99_ROUNDS,
    *_OTHER_LATENCY,
    Row(CONNECT, _get("connect_s"), "s", "lower"),
    Row("RSS per stream KiB ↓", _get("rss_per_stream_kib"), "kib", "lower"),
    Row(INTEGRITY, _integrity, "text"),
    Row("load generator busy", _get("loadgen_busy"), "s"),
]

_FANOUT = [
    Row("first delivery p50 ms ↓", _get("first_delivery_p50_ms"), "ms", "lower"),
    Row("fan-out spread p50 ms ↓", _get("fanout_spread_p50_ms"), "ms", "lower"),
]
_NOISE = Row("other work on the cores %", lambda m: 100 * m.get("noise", 0.0), "pct")
# How far behind its schedule the paced publisher fell (its messages are
# stamped with their due time, so this much is in the latency too).
_PUBLISHER_LAG = Row("publisher late, max ms", _get("publish_max_lag_ms"), "ms")

ROWS: dict[str, list[Row]] = {
    "a": [*_THROUGHPUT[:12], *_FANOUT, *_THROUGHPUT[12:], _NOISE],
    "b": [*(row for row in _THROUGHPUT if row is not _P99_ROUNDS), _NOISE],
    "c": [
        Row("latency p50 ms ↓", _get("latency_p50_ms"), "ms", "lower"),
        Row(P99, _get("latency_p99_ms"), "ms", "lower"),
        _P99_ROUNDS,
        Row("latency p99.9 ms ↓", _get("latency_p999_ms"), "ms", "lower"),
        *_OTHER_LATENCY,
        Row(PER_CPU, _get("deliveries_per_cpu_s"), "num", "higher"),
        Row("server CPU s (user+sys) ↓", _cpu_split, "text"),
        Row(INTEGRITY, _integrity, "text"),
        _PUBLISHER_LAG,
        _NOISE,
    ],
    "d": [
        Row(IDLE_RSS, _get("rss_per_stream_kib"), "kib", "lower"),
        Row("PSS per idle stream KiB ↓", _get("pss_per_stream_kib"), "kib", "lower"),
        Row(CONNECT, _get("connect_s"), "s", "lower"),
        Row("server processes", _get("server_processes"), "num"),
        _NOISE,
    ],
    "e": [
        Row(INTEGRITY, _integrity, "text"),
        Row("reconnect all streams s ↓", _get("reconnect_s"), "s", "lower"),
        Row("reconnect server CPU s ↓", _get("reconnect_server_cpu_s"), "s", "lower"),
        Row(PER_CPU, _get("deliveries_per_cpu_s"), "num", "higher"),
        Row(P99, _get("latency_p99_ms"), "ms", "lower"),
        _PUBLISHER_LAG,
        _NOISE,
    ],
}


# --- targets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    key: str
    scenario: str
    row: str  # the label of the row it annotates
    text: str
    judge: Callable[[Results], tuple[bool | None, str]]


def _metric(results: Results, scenario: str, server: str, key: str) -> Any:
    metrics = results.get(scenario, {}).get(server, {})
    return metrics.get(key) if metrics.get("status") == "ok" else None


def _ratio_target(scenario: str, peer: str, minimum: float) -> Callable[[Results], Any]:
    def judge(results: Results) -> tuple[bool | None, str]:
        ours = _metric(results, scenario, SUBJECT, "deliveries_per_cpu_s")
        theirs = _metric(results, scenario, peer, "deliveries_per_cpu_s")
        if not ours or not theirs:
            return None, "no data"
        ratio = ours / theirs
        complete = bool(_metric(results, scenario, SUBJECT, "all_delivered"))
        note = "" if complete else ", messages lost"
        return ratio >= minimum and complete, f"{ratio:.2f}x{note}"

    return judge


def _latency_target(scenario: str) -> Callable[[Results], Any]:
    def judge(results: Results) -> tuple[bool | None, str]:
        ours = _metric(results, scenario, SUBJECT, "latency_p99_ms")
        theirs = _metric(results, scenario, "nchan", "latency_p99_ms")
        if ours is None or theirs is None:
            return None, "no data"
        return ours <= theirs, f"{_format(ours, 'ms')} vs {_format(theirs, 'ms')} ms"

    return judge


def _limit_target(scenario: str, key: str, limit: float, unit: str) -> Callable[[Results], Any]:
    def judge(results: Results) -> tuple[bool | None, str]:
        value = _metric(results, scenario, SUBJECT, key)
        if value is None:
            return None, "no data"
        return value <= limit, f"{value:g} {unit}"

    return judge


def _storm_target(results: Results) -> tuple[bool | None, str]:
    lost = _metric(results, "e", SUBJECT, "lost")
    duplicated = _metric(results, "e", SUBJECT, "duplicated")
    if lost is None or duplicated is None:
        return None, "no data"
    return lost == 0 and duplicated == 0, f"{lost} lost, {duplicated} dup"


TARGETS = [
    Target(
        "a-cpu-nchan",
        "a",
        PER_CPU,
        "≥1.0x nchan",
        _ratio_target("a", "nchan", 1.0),
    ),
    Target(
        "a-cpu-starlette",
        "a",
        PER_CPU,
        "≥4x sse-starlette",
        _ratio_target("a", "sse-starlette", 4.0),
    ),
    Target(
        "b-cpu-nchan",
        "b",
        PER_CPU,
        "≥1.0x nchan",
        _ratio_target("b", "nchan", 1.0),
    ),
    Target(
        "b-cpu-starlette",
        "b",
        PER_CPU,
        "≥4x sse-starlette",
        _ratio_target("b", "sse-starlette", 4.0),
    ),
    Target("a-p99", "a", P99, "p99 ≤ nchan", _latency_target("a")),
    Target("c-p99", "c", P99, "p99 ≤ nchan", _latency_target("c")),
    Target(
        "d-rss",
        "d",
        IDLE_RSS,
        "≤ 10 KiB",
        _limit_target("d", "rss_per_stream_kib", 10.0, "KiB"),
    ),
    Target(
        "a-connect",
        "a",
        CONNECT,
        "10k in ≤ 3 s",
        _limit_target("a", "connect_s", 3.0, "s"),
    ),
    Target("e-integrity", "e", INTEGRITY, "0 lost, 0 dup", _storm_target),
]

#: The reference beside the targets (``bench/python_floor.py``), not a target itself.
FLOOR = "python-floor"


def floor_reference(results: Results) -> list[dict[str, Any]]:
    """Per throughput scenario: the Python floor ÷ sse-starlette, and unifrost ÷ the floor.

    What a server doing nothing but the sends reaches against sse-starlette in
    the same run is as far as any Python server's ratio can go there.
    """
    reference = []
    for scenario in ("a", "b"):
        floor = _metric(results, scenario, FLOOR, "deliveries_per_cpu_s")
        if not floor or not _metric(results, scenario, FLOOR, "all_delivered"):
            continue
        entry: dict[str, Any] = {"scenario": scenario}
        starlette = _metric(results, scenario, "sse-starlette", "deliveries_per_cpu_s")
        if starlette:
            entry["floor_per_starlette"] = round(floor / starlette, 2)
        ours = _metric(results, scenario, SUBJECT, "deliveries_per_cpu_s")
        if ours:
            entry["unifrost_per_floor"] = round(ours / floor, 2)
        reference.append(entry)
    return reference


def judge_targets(results: Results) -> list[dict[str, Any]]:
    judged = []
    for target in TARGETS:
        if target.scenario not in results:
            continue
        passed, shown = target.judge(results)
        verdict = "n/a" if passed is None else ("PASS" if passed else "FAIL")
        judged.append(
            {
                "key": target.key,
                "scenario": target.scenario,
                "target": target.text,
                "value": shown,
                "result": verdict,
            }
        )
    return judged


# --- rendering ---------------------------------------------------------------------------


def _format(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if fmt == "num":
        if abs(value) >= 1e6:
            return f"{value / 1e6:.2f}M"
        if abs(value) >= 1e4:
            return f"{value / 1e3:.1f}k"
        return f"{value:g}"
    if fmt == "ms":
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    if fmt in ("s", "kib"):
        return f"{value:.2f}"
    if fmt == "pct":
        return f"{value:.1f}"
    return str(value)


def _cell(metrics: dict[str, Any] | None, row: Row) -> str:
    if not metrics:
        return "-"
    status = metrics.get("status", "ok")
    if status == "n/a":
        return "n/a"
    if status != "ok":
        return "error"
    return _format(row.value(metrics), row.fmt)


def _ratio(ours: dict[str, Any] | None, theirs: dict[str, Any] | None, row: Row) -> str:
    if not row.better or not ours or not theirs:
        return ""
    if ours.get("status") != "ok" or theirs.get("status") != "ok":
        return ""
    a, b = row.value(ours), row.value(theirs)
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return ""
    return f"{a / b:.2f}x"


def render(results: Results, titles: dict[str, str], servers: list[str]) -> str:
    """The table as text: one block per scenario, targets in the last column."""
    peers = [p for p in PEERS if p in servers]
    header = ["metric", *servers, *(f"÷ {p}" for p in peers), "target → result"]
    judged = {(t["scenario"], t["target"]): t for t in judge_targets(results)}
    lines: list[list[str]] = []
    for scenario, by_server in results.items():
        lines.append([f"({scenario}) {titles.get(scenario, '')}"])
        for row in ROWS.get(scenario, []):
            cells = [f"  {row.label}"]
            cells += [_cell(by_server.get(s), row) for s in servers]
            if all(cell == "-" for cell in cells[1:]):
                continue  # e.g. the rounds of a single run
            cells += [_ratio(by_server.get(SUBJECT), by_server.get(p), row) for p in peers]
            verdicts = [
                f"{t.text}: {judged[(scenario, t.text)]['result']}"
                for t in TARGETS
                if t.scenario == scenario and t.row == row.label and (scenario, t.text) in judged
            ]
            cells.append("; ".join(verdicts))
            lines.append(cells)
        for server in servers:
            status = by_server.get(server, {}).get("status", "ok")
            if status not in ("ok", "n/a"):
                lines.append([f"  ! {server}: {status}"])
    widths = [len(h) for h in header]
    for cells in lines:
        if len(cells) > 1:
            widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=False)]
    head = [header[0].ljust(widths[0])]
    head += [h.rjust(w) for h, w in zip(header[1:-1], widths[1:-1], strict=True)]
    out = ["  ".join([*head, header[-1]])]
    out.append("-" * len(out[0]))
    for cells in lines:
        if len(cells) == 1:
            out.append(cells[0])
            continue
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True)]
        out.append("  ".join([first, *rest, cells[-1]]).rstrip())
    summary = judge_targets(results)
    if summary:
        passed = sum(t["result"] == "PASS" for t in summary)
        out.append("")
        out.append(f"Targets: {passed}/{len(summary)} PASS")
        for t in summary:
            out.append(f"  {t['result']:4}  ({t['scenario']}) {t['target']}: {t['value']}")
    reference = floor_reference(results)
    if reference:
        out.append("")
        out.append(f"Reference: {FLOOR} (bench/python_floor.py: nothing but the sends)")
        for entry in reference:
            parts = []
            if "floor_per_starlette" in entry:
                parts.append(f"{entry['floor_per_starlette']:.2f}x sse-starlette")
            if "unifrost_per_floor" in entry:
                parts.append(f"unifrost at {entry['unifrost_per_floor']:.2f}x of it")
            out.append(f"  ({entry['scenario']}) deliveries / server CPU-s: {'; '.join(parts)}")
    return "\n".join(out)


# --- the machine ---------------------------------------------------------------------------


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _dpkg_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "missing"


def source_digest() -> str:
    """A short digest of unifrost's source files: which code the numbers belong to."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "service").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tornado": _package_version("tornado"),
        "unifrost": _package_version("unifrost"),
        "unifrost_source_sha256": source_digest(),
        "nginx": nginx_version(),
        "nchan": _dpkg_version("libnginx-mod-nchan"),
        "sse_starlette": _package_version("sse-starlette"),
        "starlette": _package_version("starlette"),
        "uvicorn": _package_version("uvicorn"),
        "uvloop": _package_version("uvloop"),
        "httptools": _package_version("httptools"),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the table of a saved artefact again: ``python -m bench.report FILE``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("artefact", type=Path, help="a JSON file written by bench.suite")
    args = parser.parse_args(argv)
    artefact = json.loads(args.artefact.read_text())
    results: Results = artefact["results"]
    servers = list(next(iter(results.values())))
    print(artefact["table"].split("\n\n", 1)[0])
    print()
    print(render(results, artefact["config"]["scenarios"], servers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
