"""A private ``redis-server`` process for tests that stop, restart or configure it.

Tests that only need *a* Redis use the shared one on 127.0.0.1:6379. Outage
tests kill their own server on a free loopback port and start it again on the
same port::

    async with redis_server() as server:
        server.kill()
        await server.start()  # same port, same arguments (``server.args`` may change between)

:meth:`RedisServer.pause` freezes the process (``SIGSTOP``): its connections
stay open but nothing answers, like a server or route that died without a
reset. The process is always killed when the ``async with`` block ends.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Sequence

from tests.brokers.local_server import LocalServer, free_port

REDIS_SERVER = "/usr/bin/redis-server"
SHARED_URL = "redis://127.0.0.1:6379"

__all__ = ["SHARED_URL", "RedisServer", "free_port", "redis_server"]


class RedisServer(LocalServer):
    """One ``redis-server --port <port>``, without persistence unless ``args`` turn it on."""

    name = "redis-server"

    def __init__(self, port: int, args: Sequence[str] = ()) -> None:
        super().__init__(port)
        self.args = list(args)

    def command(self) -> list[str]:
        return [
            REDIS_SERVER,
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
            *self.args,
        ]

    def pause(self) -> None:
        """Freeze the process: connections stay open, nothing is answered."""
        assert self.proc is not None and self.running
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None and self.running
        self.proc.send_signal(signal.SIGCONT)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def redis_server(*args: str) -> AsyncIterator[RedisServer]:
    """A started private server on a free port; ``args`` are extra config directives."""
    server = RedisServer(free_port(), args)
    try:
        await server.start()
        yield server
    finally:
        server.close()
