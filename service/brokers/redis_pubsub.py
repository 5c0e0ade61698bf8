"""The Redis pub/sub driver (redis-py's asyncio client): ``redis://`` and ``rediss://``.

URLs and options are parsed by :mod:`service.brokers.redis_config`. With
``streams=1`` the same schemes are served by the Redis Streams driver instead
(:mod:`service.brokers.redis_streams`, which adds replay by stream id);
:meth:`RedisBroker.from_url` picks it, so no other scheme is needed. The ``db``
number is accepted and selected, but Redis pub/sub channels are server-wide:
the number does not separate topics.

What this module owns and the Redis pub/sub semantics:

* **One pub/sub connection per process.** Every topic of the process is
  subscribed on one dedicated connection, read by one task; publishes go
  through a separate small redis-py connection pool, since a connection in
  subscribed mode accepts no ``PUBLISH``.
* **Subscriptions.** A topic containing a glob character (``*``, ``?`` or ``[``)
  is a pattern subscription (``PSUBSCRIBE``), any other an exact channel
  (``SUBSCRIBE``). Frames carry each message's actual channel. Redis delivers
  every message to every subscribed connection, so fan-out across service
  instances needs nothing more. :meth:`RedisBroker.subscribe` returns once the
  server's confirmation of that command has arrived: commands on a connection
  are handled in order, so later publishes reach it. Redis accepts any channel
  name; it refuses only what an ACL forbids (``NOPERM``), which raises
  :class:`BrokerError`.
* **Publishing** is ``PUBLISH`` (any name, glob characters included: they are
  literal there). While disconnected, publish raises :class:`BrokerUnavailable`
  at once; otherwise the server's reply is awaited for at most ``timeout``.
* **Health check.** When the pub/sub connection has been silent for
  ``health_check_interval`` seconds, the reader sends ``PING`` on it (allowed in
  subscribed mode); without any reply within ``timeout`` the connection counts
  as lost. A connection that died without a reset (a frozen server, a dropped
  route) is so found within ``health_check_interval + timeout``, instead of
  after the kernel's keepalive hours.
* **Outages.** When the pub/sub connection drops, the driver calls
  ``_mark_down`` and reconnects after delays from :class:`Backoff`
  (exponential, jittered, capped by ``max_reconnect_wait``), subscribes every
  topic and pattern again, confirms each, and then calls ``_mark_up``.
  Failed attempts are reported through ``_report_error``. A subscription the
  server refuses on the new connection ends alone through its ``on_error``.
* **At most once.** Redis pub/sub keeps nothing: what is published while this
  process is disconnected is lost for it (``streams=1`` replays it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from service.brokers import redis_config
from service.brokers.backoff import Backoff
from service.brokers.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    CallbackSubscription,
    ErrorCallback,
    MessageCallback,
    Subscription,
)
from service.brokers.redis_base import RedisDriver
from service.brokers.redis_config import RedisConfig, is_pattern, parse_url
from service.brokers.redis_streams import RedisStreamsBroker
from service.config import Settings

# Replies that answer one command each (the health check's PING included), in the
# order the commands were sent.
_CONFIRMATIONS = frozenset({b"subscribe", b"psubscribe", b"unsubscribe", b"punsubscribe", b"pong"})


class _RedisSubscription(CallbackSubscription):
    def __init__(
        self, broker: RedisBroker, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> None:
        super().__init__(topic, on_message, on_error)
        self.broker = broker

    async def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            await self.broker._detach(self)


class RedisBroker(RedisDriver):
    """One pub/sub connection (and a publishing pool) shared by every topic."""

    def __init__(self, config: RedisConfig) -> None:
        super().__init__(config)
        self._conn: Connection | None = None  # the pub/sub connection
        self._reader: asyncio.Task[None] | None = None
        self._revive_task: asyncio.Task[None] | None = None
        self._subs: dict[str, set[_RedisSubscription]] = {}  # by subscribed topic
        self._pending: collections.deque[asyncio.Future[None]] = collections.deque()
        self._send_lock = asyncio.Lock()
        self._backoff = Backoff(maximum=config.max_reconnect_wait)

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> Broker:
        """The pub/sub driver, or the streams driver when the URL says ``streams=1``."""
        config = parse_url(url)
        return RedisStreamsBroker(config) if config.streams else cls(config)

    # --- connecting -----------------------------------------------------------------------

    async def connect(self) -> None:
        if not self._closing:
            return
        conn = await self._connect_with(self._open)
        self._start_reading(conn)
        self._mark_up()

    async def _open(self) -> Connection:
        """A connected, authenticated pub/sub connection (reads are bounded by the reader)."""
        cls = SSLConnection if self.config.tls else Connection
        conn = cls(**redis_config.connection_args(self.config, None))
        try:
            await asyncio.wait_for(conn.connect(), self.config.connect_timeout)  # type: ignore[no-untyped-call]
        except BaseException:
            await self._drop(conn)
            raise
        return conn

    def _start_reading(self, conn: Connection) -> None:
        self._conn = conn
        self._reader = asyncio.get_running_loop().create_task(self._read(conn))

    async def close(self) -> None:
        self._closing = True
        self._up = False  # closed on purpose: nobody to tell
        for task in (self._revive_task, self._reader):
            if task is not None and task is not asyncio.current_task():
                await redis_config.stop_task(task, self.config.timeout)
        self._revive_task = self._reader = None
        for subs in self._subs.values():
            for sub in subs:
                sub.active = False
        self._subs.clear()
        self._fail_pending()
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._drop(conn)
        await self._close_client()

    # --- reading ----------------------------------------------------------------------------

    async def _read(self, conn: Connection) -> None:
        """Deliver messages and confirmations until the connection drops or falls silent.

        After ``health_check_interval`` without any reply a ``PING`` goes out; any
        reply within ``timeout`` (its pong, or a message) proves the connection alive.
        """
        loop = asyncio.get_running_loop()
        probe_deadline: float | None = None
        try:
            while True:
                if probe_deadline is None:
                    wait = self.config.health_check_interval
                else:
                    wait = max(probe_deadline - loop.time(), 0.0)
                try:
                    # An explicit timeout returns None on silence; the parser keeps
                    # any partly read reply for the next call.
                    reply = await conn.read_response(timeout=wait)
                except ResponseError as exc:  # a refused command, in order with the others
                    self._answer(BrokerError(self._text(exc)))
                    probe_deadline = None
                    continue
                if reply is not None:
                    self._dispatch(reply)
                    probe_deadline = None
                elif probe_deadline is None:
                    probe = await self._send(conn, "PING")
                    probe.add_done_callback(_retrieve)  # nobody awaits it: the reader watches
                    probe_deadline = loop.time() + self.config.timeout
                else:
                    raise RedisConnectionError(f"no answer to PING within {self.config.timeout:g}s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone (EOF, reset, ...)
            reason = self._text(exc)
        if self._closing or conn is not self._conn:
            return
        self._lost(f"connection to Redis lost ({reason}); reconnecting")
        await self._drop(conn)

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == b"message":
            self._deliver(reply[1], reply[1], reply[2])
        elif kind == b"pmessage":
            self._deliver(reply[1], reply[2], reply[3])
        elif kind in _CONFIRMATIONS:
            self._answer(None)

    def _deliver(self, subscribed: bytes, channel: bytes, body: bytes) -> None:
        actual = channel.decode("utf-8", "replace")
        for sub in list(self._subs.get(subscribed.decode("utf-8", "replace"), ())):
            sub.deliver(actual, body)

    def _answer(self, error: BrokerError | None) -> None:
        if not self._pending:
            return
        waiter = self._pending.popleft()
        if waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, collections.deque()
        for waiter in pending:
            if not waiter.done():
                waiter.set_exception(BrokerUnavailable("connection to Redis lost"))
                waiter.exception()  # retrieved: nobody may be waiting any more

    # --- outages ------------------------------------------------------------------------------

    def _lost(self, reason: str) -> None:
        self._conn = None
        self._fail_pending()
        self._mark_down(reason)
        if self._revive_task is None or self._revive_task.done():
            self._revive_task = asyncio.get_running_loop().create_task(self._revive())

    async def _revive(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._backoff.next_delay())
            try:
                conn = await self._open()
            except (RedisError, OSError, TimeoutError) as exc:
                self._report_error(f"reconnecting to {self.describe()} failed: {self._text(exc)}")
                continue
            if self._closing:
                await self._drop(conn)
                return
            self._start_reading(conn)
            if await self._resubscribe():
                self._backoff.reset()
                self._mark_up()
                return
            await self._abandon(conn)  # lost again, or unresponsive: try a new connection

    async def _abandon(self, conn: Connection) -> None:
        reader, self._reader = self._reader, None
        self._conn = None  # its reader, if still running, reports nothing
        self._fail_pending()
        if reader is not None:
            await redis_config.stop_task(reader, self.config.timeout)
        await self._drop(conn)

    async def _resubscribe(self) -> bool:
        """Subscribe every topic again; False when the connection dropped meanwhile."""
        for topic in list(self._subs):
            try:
                await self._command(_subscribe_command(topic), topic)
            except BrokerUnavailable as exc:
                self._report_error(f"resubscribing to Redis failed: {exc}")
                return False
            except BrokerError as exc:  # refused now (an ACL changed): that topic ends alone
                for sub in self._subs.pop(topic, set()):
                    sub.active = False
                    sub.on_error(f"Redis refused the subscription to {topic!r}: {exc}")
        return True

    # --- subscribe and publish --------------------------------------------------------------

    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> Subscription:
        self._require_up()
        sub = _RedisSubscription(self, topic, on_message, on_error)
        first = topic not in self._subs
        self._subs.setdefault(topic, set()).add(sub)
        try:
            # Sent for a topic already subscribed too: its confirmation is the point
            # from which delivery to this subscription is guaranteed.
            await self._command(_subscribe_command(topic), topic)
        except BrokerUnavailable:
            self._forget(sub)
            raise
        except BrokerError as exc:
            self._forget(sub)
            if first:
                self._subs.pop(topic, None)
            raise BrokerError(f"Redis refused the subscription to {topic!r}: {exc}") from exc
        except BaseException:
            await sub.unsubscribe()
            raise
        return sub

    def _forget(self, sub: _RedisSubscription) -> bool:
        """Drop ``sub``; True when it was the topic's last subscription."""
        sub.active = False
        subs = self._subs.get(sub.topic)
        if subs is None:
            return False
        subs.discard(sub)
        if subs:
            return False
        del self._subs[sub.topic]
        return True

    async def _detach(self, sub: _RedisSubscription) -> None:
        if not self._forget(sub) or self._conn is None or not self._up:
            return  # a lost connection unsubscribes by itself; the reconnect skips it
        command = "PUNSUBSCRIBE" if is_pattern(sub.topic) else "UNSUBSCRIBE"
        with contextlib.suppress(BrokerError):
            await self._command(command, sub.topic)

    async def _command(self, command: str, topic: str) -> None:
        """Send one (un)subscribe command and wait for the server's answer to it."""
        conn = self._conn
        if conn is None or not conn.is_connected:
            raise BrokerUnavailable("not connected to Redis; reconnecting")
        try:
            waiter = await self._send(conn, command, topic)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"{command} failed: {self._text(exc)}") from exc
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.config.timeout)
        except TimeoutError:
            raise BrokerUnavailable(
                f"Redis did not confirm {command} {topic!r} within {self.config.timeout:g}s"
            ) from None

    async def _send(self, conn: Connection, *command: str) -> asyncio.Future[None]:
        """Send ``command``; the returned future is answered by the reader, in order."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._send_lock:  # replies come in the order the commands are sent
            self._pending.append(waiter)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can lose the reader's cancel.
            async with asyncio.timeout(self.config.timeout):
                await conn.send_command(*command, check_health=False)
        return waiter

    async def publish(self, topic: str, body: bytes) -> None:
        await self._publish_with(topic, self._require_up().publish(topic, body))


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _subscribe_command(topic: str) -> str:
    return "PSUBSCRIBE" if is_pattern(topic) else "SUBSCRIBE"


__all__: Sequence[str] = ("RedisBroker", "RedisConfig", "is_pattern", "parse_url")
