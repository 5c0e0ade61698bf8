"""An example run as its README runs it: ``python -m examples.<name> ...`` in a process.

The process's output is collected as it comes (so a chatty example never blocks
on a full pipe) and shown when something fails. ``stop()`` is Ctrl-C: the
example must exit 0 without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

from tests.processes import REPO, clean_env

START_TIMEOUT = 15.0


class ExampleProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))
            self._new_line.set()
        self._new_line.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_line(self, start: str, timeout: float = START_TIMEOUT) -> str:
        """The first output line starting with ``start`` (waits for it)."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines:
                    if line.startswith(start):
                        return line
                if self._reader.done():
                    raise AssertionError(f"exited before {start!r}:\n{self.output}")
                self._new_line.clear()
                await self._new_line.wait()

    async def stop(self) -> int:
        """Ctrl-C, as a reader of the README would; returns the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(self.proc.wait(), 10)
        await self._reader
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def _ctrl_c_as_in_a_terminal() -> None:
    # A suite started in the background (`make test &`, some CI runners) passes on
    # an ignored SIGINT, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.asynccontextmanager
async def example_process(module: str, *args: str, ready: str) -> AsyncIterator[ExampleProcess]:
    """``python -m module args``, yielded once it printed a line starting with ``ready``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=REPO,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    example = ExampleProcess(proc)
    try:
        await example.wait_for_line(ready)
        yield example
    finally:
        example.kill()
        await proc.wait()
        await example._reader


async def assert_clean_exit(example: ExampleProcess) -> None:
    code = await example.stop()
    assert code == 0 and "Traceback" not in example.output, example.output
