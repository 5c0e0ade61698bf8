"""``--shield``: other threads kept off the servers' core, and put back afterwards.

The tests hand ``shielded`` a ``/proc`` that lists only their own idle process,
so the rest of the machine is left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.shield import shielded

IDLE = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def idle_process() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(IDLE)
    yield process
    process.kill()
    process.wait()


def only(process: subprocess.Popen[bytes], root: Path) -> Path:
    """A ``/proc`` with just ``process``'s one thread in it."""
    (root / str(process.pid) / "task" / str(process.pid)).mkdir(parents=True)
    return root


def test_a_thread_free_to_use_the_core_leaves_it_and_comes_back(
    idle_process: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    cores = set(range(os.cpu_count() or 1))
    assert len(cores) >= 2, "shielding needs a second core"
    os.sched_setaffinity(idle_process.pid, cores)
    with shielded(0, only(idle_process, tmp_path)) as moved:
        assert moved == 1
        assert os.sched_getaffinity(idle_process.pid) == cores - {0}
    assert os.sched_getaffinity(idle_process.pid) == cores


def test_a_thread_pinned_to_the_core_stays(
    idle_process: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    os.sched_setaffinity(idle_process.pid, {0})
    with shielded(0, only(idle_process, tmp_path)) as moved:
        assert moved == 0
        assert os.sched_getaffinity(idle_process.pid) == {0}
    assert os.sched_getaffinity(idle_process.pid) == {0}
