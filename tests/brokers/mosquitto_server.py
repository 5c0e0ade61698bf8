"""A private ``mosquitto`` process for tests that stop and restart the broker.

Tests that only need *a* broker use the machine's Mosquitto on 127.0.0.1:1883.
Outage tests kill their own broker instead, on a free loopback port, and start
it again on the same port::

    async with mosquitto_server() as server:
        ...
        server.kill()
        await server.start()  # same port, same config

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

from tests.brokers.nats_server import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
SHARED_URL = "mqtt://127.0.0.1:1883"
START_TIMEOUT = 10.0


class MosquittoServer:
    """One ``mosquitto -c <config>`` process listening on 127.0.0.1:<port>."""

    def __init__(self, port: int, config_path: Path) -> None:
        self.port = port
        self.config_path = config_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="mosquitto-", suffix=".log")  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        """Start the process and wait until it accepts connections."""
        assert not self.running, "already running"
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not await self._accepts():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"mosquitto exited with {code}: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mosquitto not up within {START_TIMEOUT}s: {self.log()}")
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
async def mosquitto_server(extra_config: str = "") -> AsyncIterator[MosquittoServer]:
    """A started private broker on a free port, anonymous clients allowed."""
    with tempfile.TemporaryDirectory(prefix="mosquitto-") as tmp:
        port = free_port()
        path = Path(tmp) / "mosquitto.conf"
        path.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra_config}"
        )
        server = MosquittoServer(port, path)
        try:
            await server.start()
            yield server
        finally:
            server.kill()
            server._log.close()
