"""The benchmark publisher's pacing: on time, at real-time priority."""

from __future__ import annotations

import math
import os
import threading
import time

import pytest

from bench.publisher import _wait_for, realtime_priority


def in_thread(body: object) -> None:
    failure: list[BaseException] = []

    def run() -> None:
        try:
            body()  # type: ignore[operator]
        except BaseException as exc:  # reported in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def test_the_publishing_thread_alone_runs_real_time_inside_the_block() -> None:
    """Needs CAP_SYS_NICE, as the benchmark has on its machine (it runs as root)."""

    def body() -> None:
        before = os.sched_getscheduler(0)
        with realtime_priority() as granted:
            assert granted
            assert os.sched_getscheduler(0) == os.SCHED_FIFO
            assert os.sched_getparam(0).sched_priority == 1
            assert os.sched_getscheduler(threading.main_thread().native_id) == before
        assert os.sched_getscheduler(0) == before

    in_thread(body)


def test_without_permission_the_block_runs_at_normal_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with realtime_priority() as granted:
        assert not granted
        assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_a_paced_wait_never_oversleeps_the_due_time() -> None:
    """epoll_wait rounds its timeout up to whole milliseconds: the wait stops a
    millisecond short, and the last stretch is slept precisely."""
    due = time.time_ns() + 5_300_000
    timeout = _wait_for(due)
    waited_until = time.time_ns() + math.ceil(timeout * 1000) * 1_000_000
    assert 3_000_000 < timeout * 1e9 < 4_400_000
    assert waited_until <= due

    due = time.time_ns() + 600_000
    assert _wait_for(due) == 0.0
    assert time.time_ns() >= due - 50_000  # slept until due (the clocks may differ a little)

    before = time.perf_counter()
    assert _wait_for(time.time_ns() - 1_000_000) == 0.0  # overdue: no wait
    assert time.perf_counter() - before < 0.01
