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

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from tests.brokers.local_server import LocalServer, free_port

MOSQUITTO = "/usr/sbin/mosquitto"
SHARED_URL = "mqtt://127.0.0.1:1883"


class MosquittoServer(LocalServer):
    """One ``mosquitto -c <config>`` process listening on 127.0.0.1:<port>."""

    name = "mosquitto"

    def __init__(self, port: int, config_path: Path) -> None:
        super().__init__(port)
        self.config_path = config_path

    def command(self) -> list[str]:
        return [MOSQUITTO, "-c", str(self.config_path)]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


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
            server.close()
