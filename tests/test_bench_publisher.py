"""The benchmark publisher's real-time priority while it paces."""

from __future__ import annotations

import os
import threading

import pytest

from bench.publisher import realtime_priority


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
