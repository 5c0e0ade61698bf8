"""A scenario's rounds, one server's runs of it, as the one set of numbers the table shows.

Kept apart from :mod:`bench.suite` so it imports nothing but the standard
library (the suite needs the benchmark's peers installed).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

#: Metrics taken from the worst round rather than the median: a message lost in
#: one round, or a disturbed round, must show in the table.
_WORST_ROUND: dict[str, Any] = {
    "lost": max,
    "duplicated": max,
    "out_of_order": max,
    "publish_errors": max,
    "connect_failed": max,
    "reconnect_failed": max,
    "closed_by_server": max,
    "latency_max_ms": max,
    "read_latency_max_ms": max,
    "all_latency_max_ms": max,
    "noise": max,
    "all_delivered": all,
}


def best_attempt(
    run_once: Callable[[], dict[str, Any]],
    retries: int,
    noise_limit: float,
    again: Callable[[str], None],
) -> dict[str, Any]:
    """``run_once()``, repeated (up to ``retries`` times) while a run failed or other
    work disturbed it (took more than ``noise_limit`` of a pinned core).

    Returns the best run (:func:`better_attempt`), with what went wrong in the
    others under ``other_attempts``; ``again(reason)`` hears of each repeat.
    """
    kept: dict[str, Any] | None = None
    problems: list[str] = []
    for attempt in range(1, retries + 2):
        metrics = run_once()
        metrics["attempt"] = attempt
        noise = metrics.get("noise", 0.0)
        failed = metrics["status"] not in ("ok", "n/a")
        problems.append(metrics["status"] if failed else f"other work {noise:.0%}")
        if better_attempt(kept, metrics):
            kept = metrics
        if not failed and noise <= noise_limit:
            break
        if attempt <= retries:
            again("it failed" if failed else f"other work took {noise:.0%} of a core")
    assert kept is not None
    others = [problem for n, problem in enumerate(problems, 1) if n != kept["attempt"]]
    if others:
        kept["other_attempts"] = others
    return kept


def better_attempt(kept: dict[str, Any] | None, run: dict[str, Any]) -> bool:
    """Whether ``run`` should replace ``kept`` as a round's result.

    A run that completed beats one that failed, however disturbed; between two
    of a kind the less disturbed one wins.
    """
    if kept is None:
        return True
    run_ok, kept_ok = run.get("status") == "ok", kept.get("status") == "ok"
    if run_ok != kept_ok:
        return run_ok
    return bool(run.get("noise", 0.0) < kept.get("noise", 0.0))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def combine_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's rounds of one scenario as one set of metrics.

    Each number is the median over the rounds, except those in
    ``_WORST_ROUND``; the CPU split is the median-CPU round's, so user and
    system add up to the total shown. A round that failed makes the whole a
    failure. Every round's own metrics stay under ``"rounds"``.
    """
    if len(runs) == 1:
        return runs[0]
    failed = [run for run in runs if run.get("status") != "ok"]
    if failed:
        return {**failed[0], "rounds": runs}
    merged = dict(runs[0])
    for key, first in runs[0].items():
        values = [run.get(key) for run in runs]
        if key in _WORST_ROUND:
            merged[key] = _WORST_ROUND[key](values)
        elif _is_number(first) and all(_is_number(value) for value in values):
            merged[key] = statistics.median(values)
    if all(_is_number(run.get("server_cpu_s")) for run in runs):
        middle = sorted(runs, key=lambda run: run["server_cpu_s"])[len(runs) // 2]
        for key in ("server_cpu_s", "server_user_s", "server_sys_s"):
            merged[key] = middle[key]
    merged["rounds"] = runs
    return merged
