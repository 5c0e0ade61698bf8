"""The running service: broker, hub, manager, both listeners, signals and drain."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
from collections.abc import Callable
from typing import Any

from tornado.netutil import bind_sockets

from service import __version__
from service.brokers import open_broker
from service.brokers.base import Broker
from service.config import Address, Settings
from service.consumers.hub import TopicHub
from service.consumers.manager import ConsumerManager, ConsumerPolicy
from service.context import AppContext
from service.log import flush_logs, get_logger
from service.metrics import Metrics
from service.web.base import JSON_BODY_LIMIT
from service.web.demo import run_demo_publisher
from service.web.front import FrontServer

log = get_logger("unifrost.server")

# Browsers reconnect in waves (after a deploy, a network blip): a deep accept
# queue keeps a wave from hitting SYN retries. The kernel caps it at somaxconn.
LISTEN_BACKLOG = 4096
# Longest wait for the broker connection to close on shutdown.
BROKER_CLOSE_TIMEOUT = 3.0
# Allocations between young-generation collections (CPython's default: 700).
GC_THRESHOLD = 100_000


def policy_from(settings: Settings) -> ConsumerPolicy:
    return ConsumerPolicy(
        ttl=settings.consumer_ttl,
        max_messages=settings.buffer.max_messages,
        max_bytes=settings.buffer.max_bytes,
        max_consumers=settings.limits.max_consumers,
        max_subscriptions=settings.limits.max_subscriptions_per_consumer,
        heartbeat=settings.heartbeat,
    )


class Server:
    """Owns every long-lived object of one service process."""

    def __init__(
        self, settings: Settings, metrics: Metrics | None = None, broker: Broker | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.broker = broker or open_broker(settings.broker, settings)
        self.ctx: AppContext | None = None
        self.public_port = 0
        self.admin_port = 0
        self._servers: list[FrontServer] = []
        self._demo: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        from service.app import make_admin_app, make_public_app

        settings = self.settings
        hub = TopicHub(self.broker, self.metrics, settings.event_name)
        await self.broker.connect()
        manager = ConsumerManager(hub, self.metrics, policy_from(settings))
        self.ctx = AppContext(settings, self.broker, hub, manager, self.metrics)
        body_limit = max(settings.max_message_bytes, JSON_BODY_LIMIT)
        self.public_port = self._listen(make_public_app(self.ctx), settings.listen, body_limit)
        self.admin_port = self._listen(make_admin_app(self.ctx), settings.admin_listen, body_limit)
        self.ctx.state.admin_port = self.admin_port
        if settings.demo:
            self._demo = asyncio.create_task(run_demo_publisher(self.broker))
        log.info(
            "server.started",
            version=__version__,
            listen=f"{settings.listen.host}:{self.public_port}",
            admin_listen=f"{settings.admin_listen.host}:{self.admin_port}",
            broker=self.broker.describe(),
            demo=settings.demo,
            # Read from the loop itself: the one actually running, whatever was asked for.
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    def _listen(self, app: Any, address: Address, body_limit: int) -> int:
        # Streams are long-lived: no idle timeout on the connection itself;
        # heartbeats find dead peers.
        server = FrontServer(app, max_body_size=body_limit, idle_connection_timeout=3600)
        sockets = bind_sockets(
            address.port, address.host, family=socket.AF_UNSPEC, backlog=LISTEN_BACKLOG
        )
        server.add_sockets(sockets)
        self._servers.append(server)
        return int(sockets[0].getsockname()[1])

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then drain."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        tune_garbage_collector()
        await self._stop.wait()
        await self.stop()

    async def stop(self) -> None:
        """Drain: unready, stop accepting, say goodbye to streams, close the broker."""
        assert self.ctx is not None
        settings = self.settings
        ctx = self.ctx
        ctx.state.draining = True
        log.info("server.stopping", connections=ctx.manager.connected_count)
        for server in self._servers:
            server.stop()
        if self._demo:
            self._demo.cancel()
        ctx.manager.close_streams(settings.retry)
        # The whole drain fits in drain_timeout: streams get it less a share kept
        # for closing the broker (a driver blocked in a long poll must not hold
        # the exit past it).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.drain_timeout
        broker_share = min(BROKER_CLOSE_TIMEOUT, settings.drain_timeout / 4)
        try:
            await asyncio.wait_for(
                self._close_connections(), timeout=settings.drain_timeout - broker_share
            )
        except TimeoutError:
            log.warning("server.drain_timeout", timeout_s=settings.drain_timeout)
        await ctx.manager.close()
        try:
            await asyncio.wait_for(self.broker.close(), timeout=max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.warning("broker.error", op="close", error="timed out; exiting anyway")
        log.info("server.stopped")
        flush_logs()  # the last line is out before whoever waits for the stop goes on

    async def _close_connections(self) -> None:
        for server in self._servers:
            await server.close_all_connections()


def tune_garbage_collector() -> None:
    """Collect less often: each stream keeps a few dozen long-lived objects.

    With the default thresholds a wave of connecting streams triggers full
    collections over every object already held, a quarter of the CPU a connect
    costs. Freezing what start-up created keeps it out of every later pass.
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 1000)


def run(settings: Settings, broker: Broker | None = None) -> None:
    """Serve until signalled; the process exits 0 after a clean drain."""
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            runner.run(Server(settings, broker=broker).serve())
    finally:
        flush_logs()


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop ``event_loop`` names (None: asyncio's default)."""
    if name == "uvloop":
        import uvloop  # an optional extra; the settings checked that it is installed

        return uvloop.new_event_loop
    return None
