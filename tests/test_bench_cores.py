"""A core's busy time, which the benchmark compares with the processes pinned to it."""

from __future__ import annotations

import os
import threading
import time

from bench.loadgen import core_times


def test_a_core_is_at_least_as_busy_as_the_thread_that_ran_on_it_in_a_steady_rhythm() -> None:
    """0.3 ms of work at the start of every millisecond, as (c)'s server does: timer
    ticks that fall in step with such a rhythm miss it; the core's idle time does not."""
    cpu = max(os.sched_getaffinity(0))
    ran: list[float] = []

    def rhythm() -> None:
        os.sched_setaffinity(0, {cpu})
        started = time.thread_time()
        period = 0.001
        next_start = time.monotonic()
        deadline = next_start + 2.0
        while next_start < deadline:
            while time.monotonic() < next_start + 0.0003:
                pass
            next_start += period
            pause = next_start - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        ran.append(time.thread_time() - started)

    thread = threading.Thread(target=rhythm)
    before = core_times(cpu)[0]
    thread.start()
    thread.join()
    busy = core_times(cpu)[0] - before
    assert ran[0] > 0.4
    assert ran[0] - 0.05 <= busy <= 2.5
