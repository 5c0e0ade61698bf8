"""A private ``moto_server`` (in-memory AWS emulator) for the SQS tests.

Started on a free loopback port, restartable on the same port; moto keeps
everything in memory, so a restart loses every queue::

    async with moto_server() as server:
        ...
        server.kill()
        await server.start()

The process is always killed when the ``async with`` block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tests.brokers.local_server import free_port

MOTO_SERVER = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "moto_server")
START_TIMEOUT = 15.0


class MotoServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="moto-server-", suffix=".log")  # noqa: SIM115

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, **options: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in options.items())
        return f"sqs://testing:testing@?endpoint_url={self.endpoint}&region=us-east-1{extra}"

    async def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not await self._answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"moto_server exited: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"moto_server not up within {START_TIMEOUT}s: {self.log()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=START_TIMEOUT)

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"GET /moto-api/ HTTP/1.0\r\n\r\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 2)
            return line.startswith(b"HTTP/")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def moto_server() -> AsyncIterator[MotoServer]:
    server = MotoServer(free_port())
    try:
        await server.start()
        yield server
    finally:
        server.kill()
        server._log.close()
