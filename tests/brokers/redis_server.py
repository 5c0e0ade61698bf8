"""A private ``redis-server`` process for tests that stop, restart or configure it.

Tests that only need *a* Redis use the shared one on 127.0.0.1:6379. Outage
tests kill their own server on a free loopback port and start it again on the
same port::

    async with redis_server() as server:
        server.kill()
        await server.start()  # same port, same arguments

The process is always killed when the ``async with`` block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from tests.brokers.nats_server import free_port

REDIS_SERVER = "/usr/bin/redis-server"
SHARED_URL = "redis://127.0.0.1:6379"
START_TIMEOUT = 10.0

__all__ = ["SHARED_URL", "RedisServer", "free_port", "redis_server"]


class RedisServer:
    """One ``redis-server --port <port>`` without persistence, restartable on its port."""

    def __init__(self, port: int, args: Sequence[str] = ()) -> None:
        self.port = port
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="redis-server-", suffix=".log")  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        """Start the process and wait until it accepts connections."""
        assert not self.running, "already running"
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not await self._accepts():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"redis-server exited with {self.proc.returncode}: {self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server not up within {START_TIMEOUT}s: {self.log()}")
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
async def redis_server(*args: str) -> AsyncIterator[RedisServer]:
    """A started private server on a free port; ``args`` are extra config directives."""
    server = RedisServer(free_port(), args)
    try:
        await server.start()
        yield server
    finally:
        server.kill()
        server._log.close()
