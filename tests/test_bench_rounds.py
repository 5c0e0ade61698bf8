"""How ``make bench`` turns a scenario's rounds into the one row the table shows."""

from __future__ import annotations

from typing import Any

from bench.report import render
from bench.rounds import best_attempt, better_attempt, combine_rounds


def _run(**metrics: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "status": "ok",
        "deliveries_per_cpu_s": 100_000,
        "latency_p99_ms": 2.0,
        "server_cpu_s": 3.0,
        "server_user_s": 1.0,
        "server_sys_s": 2.0,
        "lost": 0,
        "duplicated": 0,
        "out_of_order": 0,
        "all_delivered": True,
        "noise": 0.01,
    }
    return {**base, **metrics}


def test_numbers_are_the_median_of_the_rounds() -> None:
    runs = [
        _run(deliveries_per_cpu_s=90_000, latency_p99_ms=1.5),
        _run(deliveries_per_cpu_s=120_000, latency_p99_ms=9.0),
        _run(deliveries_per_cpu_s=100_000, latency_p99_ms=2.0),
    ]
    merged = combine_rounds(runs)
    assert merged["deliveries_per_cpu_s"] == 100_000
    assert merged["latency_p99_ms"] == 2.0
    assert merged["rounds"] == runs


def test_a_message_lost_in_one_round_shows() -> None:
    runs = [
        _run(),
        _run(lost=3, duplicated=1, all_delivered=False, noise=0.2),
        _run(),
    ]
    merged = combine_rounds(runs)
    assert (merged["lost"], merged["duplicated"]) == (3, 1)
    assert merged["all_delivered"] is False
    assert merged["noise"] == 0.2


def test_cpu_split_comes_from_one_round_and_adds_up() -> None:
    runs = [
        _run(server_cpu_s=3.0, server_user_s=1.0, server_sys_s=2.0),
        _run(server_cpu_s=5.0, server_user_s=4.0, server_sys_s=1.0),
        _run(server_cpu_s=4.0, server_user_s=1.5, server_sys_s=2.5),
    ]
    merged = combine_rounds(runs)
    assert (merged["server_cpu_s"], merged["server_user_s"], merged["server_sys_s"]) == (
        4.0,
        1.5,
        2.5,
    )


def test_a_failed_round_fails_the_scenario() -> None:
    runs = [_run(), {"status": "error: server exited"}, _run()]
    merged = combine_rounds(runs)
    assert merged["status"] == "error: server exited"


def test_a_single_run_is_shown_as_it_is() -> None:
    run = _run()
    assert combine_rounds([run]) is run


def test_the_table_shows_each_round_of_the_judged_numbers() -> None:
    results = {
        "c": {
            "unifrost": combine_rounds(
                [_run(latency_p99_ms=1.0), _run(latency_p99_ms=3.0), _run(latency_p99_ms=2.0)]
            ),
            "nchan": combine_rounds(
                [_run(latency_p99_ms=2.5), _run(latency_p99_ms=2.4), _run(latency_p99_ms=2.6)]
            ),
        }
    }
    table = render(results, {"c": "steady"}, ["unifrost", "nchan"])
    assert "1.00 3.00 2.00" in table
    assert "p99 ≤ nchan: PASS" in table  # median 2.0 against 2.5
    single = {"c": {"unifrost": _run(), "nchan": _run()}}
    assert "each round" not in render(single, {"c": "steady"}, ["unifrost", "nchan"])


def test_a_retry_that_fails_does_not_replace_a_disturbed_run_that_completed() -> None:
    disturbed = _run(noise=0.36)
    failed = {"status": "error: TimeoutError: load generator: no 'wave' within 120s"}
    assert better_attempt(None, disturbed)
    assert not better_attempt(disturbed, failed)
    assert better_attempt(failed, disturbed)
    assert better_attempt(disturbed, _run(noise=0.02))
    assert not better_attempt(_run(noise=0.02), _run(noise=0.05))


def test_a_failed_run_is_run_again_and_the_completed_one_kept() -> None:
    outcomes = iter([{"status": "error: TimeoutError: no 'wave'"}, _run(noise=0.02)])
    heard: list[str] = []
    kept = best_attempt(lambda: next(outcomes), 1, 0.10, heard.append)
    assert kept["status"] == "ok"
    assert kept["other_attempts"] == ["error: TimeoutError: no 'wave'"]
    assert heard == ["it failed"]


def test_a_disturbed_run_is_run_again_and_the_quieter_kept() -> None:
    outcomes = iter([_run(noise=0.30), _run(noise=0.05), _run(noise=0.01)])
    heard: list[str] = []
    kept = best_attempt(lambda: next(outcomes), 1, 0.10, heard.append)
    assert kept["noise"] == 0.05 and kept["attempt"] == 2
    assert kept["other_attempts"] == ["other work 30%"]
    assert heard == ["other work took 30% of a core"]


def test_a_quiet_run_or_one_that_does_not_apply_is_not_repeated() -> None:
    for first in (_run(noise=0.02), {"status": "n/a", "reason": "cannot resume"}):
        kept = best_attempt(iter([first]).__next__, 1, 0.10, lambda _reason: None)
        assert kept is first
        assert "other_attempts" not in kept
