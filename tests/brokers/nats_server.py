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

import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from tests.brokers.local_server import LocalServer, free_port

__all__ = ["SHARED_URL", "NatsServer", "free_port", "nats_server"]

NATS_SERVER = "/usr/sbin/nats-server"
SHARED_URL = "nats://127.0.0.1:4222"


class NatsServer(LocalServer):
    """One ``nats-server -a 127.0.0.1 -p <port>`` process."""

    name = "nats-server"

    def __init__(self, port: int, args: Sequence[str] = ()) -> None:
        super().__init__(port)
        self.args = list(args)
        #: The config file (when started with one); rewrite it before a restart.
        self.config_path: Path | None = None

    def command(self) -> list[str]:
        return [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), *self.args]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


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
            server.close()
