"""Running the ``unifrost`` command as a real process: its exit codes and JSON log lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 15.0
LOOPBACK_PORTS = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]


def console_script() -> str:
    """The installed ``unifrost`` entry point of this interpreter's environment."""
    beside = Path(sys.executable).parent / "unifrost"
    if beside.exists():
        return str(beside)
    found = shutil.which("unifrost")
    assert found is not None, "the unifrost console script is not installed"
    return found


PYTHON_M = [sys.executable, "-m", "service"]
SCRIPT = [console_script()]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment minus any ``UNIFROST_*`` settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIFROST_")}
    env.update(extra)
    return env


def run(
    args: Sequence[str], command: Sequence[str] = PYTHON_M, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        cwd=REPO,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
    )


def problem_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result.stderr.strip().splitlines()


# --- a served process --------------------------------------------------------------------------


class ServerProcess:
    """A ``serve`` process whose JSON log lines are read from stdout as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.records: list[dict[str, Any]] = []
        self.stderr = ""

    async def next_event(self, name: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """Read log lines until one with ``event == name``; returns it."""
        assert self.proc.stdout is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            line = await asyncio.wait_for(self.proc.stdout.readline(), max(remaining, 0.01))
            if not line:
                stderr = await self._stderr()
                raise AssertionError(f"exited before {name}: rc={self.proc.returncode} {stderr}")
            record = json.loads(line)
            self.records.append(record)
            if record["event"] == name:
                return record

    async def started(self) -> tuple[int, int]:
        """Wait for ``server.started``; returns (public port, admin port)."""
        record = await self.next_event("server.started")
        return port_of(record["listen"]), port_of(record["admin_listen"])

    async def finish(self, timeout: float = 10.0) -> int:
        """Wait for exit, collecting the remaining stdout lines and stderr."""
        stdout, stderr = await asyncio.wait_for(self.proc.communicate(), timeout)
        self.records += [json.loads(line) for line in stdout.decode().splitlines()]
        self.stderr = stderr.decode()
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def _stderr(self) -> str:
        assert self.proc.stderr is not None
        with contextlib.suppress(TimeoutError):
            return (await asyncio.wait_for(self.proc.stderr.read(), 5)).decode()
        return ""

    @property
    def events(self) -> list[str]:
        return [record["event"] for record in self.records]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def serving(
    args: Sequence[str], command: Sequence[str] = PYTHON_M, **env: str
) -> AsyncIterator[ServerProcess]:
    proc = await asyncio.create_subprocess_exec(
        *command,
        "serve",
        *args,
        cwd=REPO,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield ServerProcess(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
