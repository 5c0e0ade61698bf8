"""Keeping other work off the servers' core while a benchmark runs (``--shield``).

The suite pins every server to one core and itself to the other, but the rest
of the machine still runs where it likes: brokers' timers, kernel threads,
whatever else the host runs. A few milliseconds of that on the servers' core
delay every message published meanwhile, and decide a p99 by which server it
happened to hit. Shielding moves every movable thread off the core for the
length of the run, as ``cset shield`` does, and puts each back afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def shielded(core: int, proc: Path = Path("/proc")) -> Iterator[int]:
    """Threads that may run on ``core`` (and elsewhere) kept off it inside the block.

    Yields how many threads were moved. Threads bound to ``core`` alone
    (per-CPU kernel threads, anything pinned there on purpose) and threads the
    kernel refuses to move stay where they are.
    """
    moved: list[tuple[int, set[int]]] = []
    for task in proc.glob("[0-9]*/task/[0-9]*"):
        tid = int(task.name)
        try:
            allowed = os.sched_getaffinity(tid)
            if core not in allowed or allowed == {core}:
                continue
            os.sched_setaffinity(tid, allowed - {core})
        except OSError:  # gone meanwhile, or not movable
            continue
        moved.append((tid, allowed))
    try:
        yield len(moved)
    finally:
        for tid, allowed in moved:
            with suppress(OSError):  # gone meanwhile
                os.sched_setaffinity(tid, allowed)
