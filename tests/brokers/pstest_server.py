"""A private pstest process (Google's fake Pub/Sub server) for the gcppubsub:// tests.

The binary is built from ``tests/brokers/pstest/main.go`` by
``scripts/ensure-pstest.sh`` (run here too, a no-op when it is up to date).
pstest keeps everything in memory, so a restart loses every topic and
subscription; the topics in :attr:`PstestServer.topics` exist again as soon as
the restarted server accepts connections::

    async with pstest_server() as server:
        server.topics.append(server.topic_path("orders"))
        server.kill()
        await server.start()  # same port, "orders" already there
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from tests.brokers.local_server import LocalServer, free_port

ROOT = Path(__file__).resolve().parents[2]
PSTEST = ROOT / ".cache" / "pstest" / "pstest"
PROJECT = "unifrost-tests"

__all__ = ["PROJECT", "PstestServer", "ensure_built", "free_port", "pstest_server"]


def ensure_built() -> None:
    """Build the binary if it is missing or older than its sources."""
    subprocess.run([str(ROOT / "scripts" / "ensure-pstest.sh")], check=True)


class PstestServer(LocalServer):
    """``pstest -port <port>``: a plain-gRPC Pub/Sub emulator on 127.0.0.1."""

    name = "pstest"

    def __init__(self, port: int) -> None:
        super().__init__(port)
        #: Topics (full names) created at every start, before the port opens.
        self.topics: list[str] = []

    def command(self) -> list[str]:
        return [str(PSTEST), "-port", str(self.port), "-topics", ",".join(self.topics)]

    @property
    def host(self) -> str:
        """``host:port``, as ``PUBSUB_EMULATOR_HOST`` takes it."""
        return f"127.0.0.1:{self.port}"

    def url(self, **options: str) -> str:
        query = "".join(f"&{k}={v}" for k, v in options.items())
        return f"gcppubsub://{PROJECT}?emulator_host={self.host}{query}"

    @staticmethod
    def topic_path(topic: str) -> str:
        return f"projects/{PROJECT}/topics/{topic}"


@contextlib.asynccontextmanager
async def pstest_server() -> AsyncIterator[PstestServer]:
    """A started private server on a free port."""
    ensure_built()
    server = PstestServer(free_port())
    try:
        await server.start()
        yield server
    finally:
        server.close()
