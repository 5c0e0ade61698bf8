"""A private ``nats-server`` process for tests that stop, restart or configure it.

Tests that only need *a* NATS server use the shared one on 127.0.0.1:4222
(``make test`` starts it). Outage tests kill their own server instead, on a free
loopback port, and start it again on the same port::

    async with nats_server() as server:
        ...
        server.kill()
        await server.start()  # same port, same arguments

The process is always killed when the ``async with`` block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

NATS_SERVER = "/usr/sbin/nats-server"
SHARED_URL = "nats://127.0.0.1:4222"
START_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port nothing listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """One ``nats-server -a 127.0.0.1 -p <port>`` process, restartable on its port."""

    def __init__(self, port: int, args: Sequence[str] = ()) -> None:
        self.port = port
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        #: The config file (when started with one); rewrite it before a restart.
        self.config_path: Path | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="nats-server-", suffix=".log")  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        """Start the process and wait until it accepts connections."""
        assert not self.running, "already running"
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not await self._accepts():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"nats-server exited with {code}: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nats-server not up within {START_TIMEOUT}s: {self.log()}")
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """Kill the process abruptly (a crash, not a shutdown) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=START_TIMEOUT)

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


@contextlib.asynccontextmanager
async def nats_server(*args: str, config: str | None = None) -> AsyncIterator[NatsServer]:
    """A started private server on a free port; ``config`` is a config file's text."""
    with tempfile.TemporaryDirectory(prefix="nats-server-") as tmp:
        path = Path(tmp) / "nats.conf"
        if config is not None:
            path.write_text(config)
            args = ("-c", str(path), *args)
        server = NatsServer(free_port(), args)
        server.config_path = path if config is not None else None
        try:
            await server.start()
            yield server
        finally:
            server.kill()
            server._log.close()
