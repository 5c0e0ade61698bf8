"""A broker process a test owns: started on a free loopback port, killed, restarted.

Outage tests kill their own server (the shared system services stay untouched)
and start it again on the same port. Subclasses name the binary and its
command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port nothing listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """One server process listening on 127.0.0.1:<port>, restartable on its port."""

    #: Shown in failures and used as the log file prefix.
    name = "server"

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log")  # noqa: SIM115

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        """Start the process and wait until it accepts connections."""
        assert not self.running, "already running"
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not await self._accepts():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"{self.name} exited with {code}: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not up within {START_TIMEOUT}s: {self.log()}")
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """Kill the process abruptly (a crash, not a shutdown) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=START_TIMEOUT)

    def close(self) -> None:
        self.kill()
        self._log.close()

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    async def _accepts(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
