"""The Redis Streams driver: ``redis://…?streams=1``, with replay by stream id.

URLs and options are parsed by :mod:`service.brokers.redis_config`;
:meth:`service.brokers.redis_pubsub.RedisBroker.from_url` returns this driver
when the URL says ``streams=1``. A topic is a stream key.

What this module owns and the semantics:

* **Publishing** is ``XADD <topic> MAXLEN ~ <maxlen> * data <body>`` (without
  ``MAXLEN`` when ``maxlen=0``): Redis trims whole internal nodes, so a stream
  keeps at least ``maxlen`` entries and at most about a hundred more. The
  stream is the replay window: entries trimmed before a process read them are
  lost for it. Any Redis client can publish with the same ``XADD``.
* **Reading, fan-out kept.** Every subscribed topic of the process is read by
  one task with one ``XREAD COUNT 100 BLOCK <health_check_interval> STREAMS
  <topic>… <id>…`` on a dedicated connection; no consumer group exists, so
  every instance reads every entry. The driver remembers the newest id it read
  per topic and delivers only entries past it (de-duplication by stream id).
* **Where a topic starts.** :meth:`RedisStreamsBroker.subscribe` asks for the
  stream's newest id (``XREVRANGE … COUNT 1``; ``0-0`` for a stream that does
  not exist yet) and delivers what comes after it: the ``$`` of ``XREAD``,
  pinned at subscribe time so that nothing added between two reads is skipped.
  With ``start=<id>`` the process's first subscription of a topic starts after
  that id instead, so ``start=0`` replays the retained history first; a later
  subscription to a topic already being read joins at the stream's end.
* **Changing the topic set while a read is blocked.** A subscribe wakes the
  blocked ``XREAD`` with ``CLIENT UNBLOCK <reader id>`` (sent through the
  publishing pool), so the next ``XREAD`` includes the new topic at once, on
  the same connection. An unsubscribe needs no wake-up: entries of topics no
  longer subscribed are ignored. When an ACL forbids ``CLIENT UNBLOCK`` (or
  ``CLIENT ID``) a warning is logged once and a new topic's entries wait for the
  running ``XREAD`` to end, at most ``health_check_interval``; nothing is lost.
* **Health check.** The reading connection's read timeout is
  ``health_check_interval + timeout``: a blocked ``XREAD`` always answers
  within ``health_check_interval``, so a connection that died without a reset
  is found within that bound. With no topic to read, the reader sends ``PING``
  every ``health_check_interval`` instead.
* **Outages, replayed.** When the reading connection is lost the driver calls
  ``_mark_down``, reconnects with :class:`Backoff`, calls ``_mark_up``, and
  reads on from the last id seen per topic: what was added during the outage
  arrives after ``broker-recovered``, in order, once. A server that lost its
  data (restarted without persistence) gives new ids after the old ones, since
  ids grow with the clock; entries added with explicit smaller ids are skipped.
* **Entries from other applications.** The body is the ``data`` field; an entry
  with a single field delivers that field's value whatever its name; an entry
  with several fields and none named ``data`` is skipped, and the first such
  entry of each topic is logged (``broker.error``).
* **No patterns.** Streams are read by exact key, so a topic with a glob
  character (``*``, ``?``, ``[``) is refused with :class:`BrokerError` on
  subscribe and publish; for patterns use the pub/sub mode.
* **Refusals.** A key an ACL forbids or that holds another type is refused at
  subscribe (``subscription-failure``); if that happens later, the failing
  ``XREAD`` is traced to its topics, which end alone through their
  ``on_error``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from service.brokers import redis_config
from service.brokers.backoff import Backoff
from service.brokers.base import (
    BrokerError,
    BrokerUnavailable,
    CallbackSubscription,
    ErrorCallback,
    MessageCallback,
    Subscription,
)
from service.brokers.redis_base import RedisDriver
from service.brokers.redis_config import (
    RedisConfig,
    StreamId,
    format_stream_id,
    is_pattern,
    parse_stream_id,
)
from service.log import get_logger

log = get_logger(__name__)

DATA_FIELD = b"data"
#: Entries per stream in one XREAD reply: bounds a reply's size during a replay.
READ_COUNT = 100
#: Pause between CLIENT UNBLOCK attempts while the XREAD to wake is still on its way.
_UNBLOCK_RETRY = 0.005


class _StreamSubscription(CallbackSubscription):
    def __init__(
        self,
        broker: RedisStreamsBroker,
        topic: str,
        on_message: MessageCallback,
        on_error: ErrorCallback,
        after: StreamId,
    ) -> None:
        super().__init__(topic, on_message, on_error)
        self.broker = broker
        #: Only entries past this id are delivered to this subscription.
        self.after = after

    async def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            self.broker._detach(self)


@dataclass
class _Stream:
    """One subscribed topic: where reading goes on, and who receives it."""

    last: StreamId
    subs: set[_StreamSubscription] = field(default_factory=set)
    warned: bool = False  # an entry without a usable body was logged


class RedisStreamsBroker(RedisDriver):
    """One reading connection (and a pool for XADD, XREVRANGE, CLIENT UNBLOCK) for every topic."""

    def __init__(self, config: RedisConfig) -> None:
        super().__init__(config)
        self._conn: Connection | None = None  # the reading connection
        self._reader_id: int | None = None  # its CLIENT ID, None when unknown
        self._reader: asyncio.Task[None] | None = None
        self._revive_task: asyncio.Task[None] | None = None
        self._waker: asyncio.Task[None] | None = None
        self._streams: dict[str, _Stream] = {}
        self._wake = asyncio.Event()  # a topic was added (for a reader with none)
        self._generation = 0  # counts additions to the topic set
        self._blocked_generation: int | None = None  # that of the XREAD in progress
        self._unblock_refused = False
        self._backoff = Backoff(maximum=config.max_reconnect_wait)

    # --- connecting -----------------------------------------------------------------------

    async def connect(self) -> None:
        if not self._closing:
            return
        conn, reader_id = await self._connect_with(self._open)
        self._start_reading(conn, reader_id)
        self._mark_up()

    async def _open(self) -> tuple[Connection, int | None]:
        """A connected, authenticated reading connection and its client id."""
        cls = SSLConnection if self.config.tls else Connection
        # A blocked XREAD answers within the interval; silence past it plus
        # ``timeout`` means the connection is dead.
        read_timeout = self.config.health_check_interval + self.config.timeout
        conn = cls(**redis_config.connection_args(self.config, read_timeout))
        try:
            return await asyncio.wait_for(self._identify(conn), self.config.connect_timeout)
        except BaseException:
            await self._drop(conn)
            raise

    async def _identify(self, conn: Connection) -> tuple[Connection, int | None]:
        await conn.connect()  # type: ignore[no-untyped-call]
        await conn.send_command("CLIENT", "ID", check_health=False)
        try:
            return conn, int(await conn.read_response())
        except ResponseError as exc:  # an ACL may forbid it: subscribe then cannot wake the reader
            self._refuse_unblock(exc)
            return conn, None

    def _start_reading(self, conn: Connection, reader_id: int | None) -> None:
        self._conn, self._reader_id = conn, reader_id
        self._reader = asyncio.get_running_loop().create_task(self._read(conn))

    async def close(self) -> None:
        self._closing = True
        self._up = False  # closed on purpose: nobody to tell
        for task in (self._revive_task, self._reader, self._waker):
            if task is not None and task is not asyncio.current_task():
                await redis_config.stop_task(task, self.config.timeout)
        self._revive_task = self._reader = self._waker = None
        for stream in self._streams.values():
            for sub in stream.subs:
                sub.active = False
        self._streams.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._drop(conn)
        await self._close_client()

    # --- reading ----------------------------------------------------------------------------

    async def _read(self, conn: Connection) -> None:
        """Read every subscribed stream until the connection drops or falls silent."""
        try:
            while True:
                self._wake.clear()
                positions = {topic: stream.last for topic, stream in self._streams.items()}
                if not positions:
                    await self._idle(conn)
                    continue
                refused: ResponseError | None = None
                self._blocked_generation = self._generation
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancel.
                    async with asyncio.timeout(self.config.timeout):
                        command = _xread(positions, self._block_ms())
                        await conn.send_command(*command, check_health=False)
                    # None when the block ended empty or CLIENT UNBLOCK woke it.
                    reply = await conn.read_response()
                except ResponseError as exc:
                    refused, reply = exc, None
                finally:
                    self._blocked_generation = None
                if refused is not None:
                    await self._refused(refused)
                elif reply:
                    self._dispatch(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone (EOF, reset, read timeout, ...)
            reason = self._text(exc)
        if self._closing or conn is not self._conn:
            return
        self._lost(f"connection to Redis lost ({reason}); reconnecting")
        await self._drop(conn)

    def _block_ms(self) -> int:
        return max(1, round(self.config.health_check_interval * 1000))

    async def _idle(self, conn: Connection) -> None:
        """Nothing to read: wait for a topic, and PING the connection meanwhile."""
        try:
            async with asyncio.timeout(self.config.health_check_interval):
                await self._wake.wait()
            return
        except TimeoutError:
            pass
        async with asyncio.timeout(self.config.timeout):
            await conn.send_command("PING", check_health=False)
        if await conn.read_response(timeout=self.config.timeout) is None:
            raise RedisConnectionError(f"no answer to PING within {self.config.timeout:g}s")

    def _dispatch(self, reply: Any) -> None:
        for key, entries in reply:
            topic = key.decode("utf-8", "replace")
            stream = self._streams.get(topic)
            if stream is None:  # unsubscribed while the read was blocked
                continue
            for raw_id, fields in entries:
                entry_id = parse_stream_id(raw_id)
                if entry_id <= stream.last:  # delivered already
                    continue
                stream.last = entry_id
                body = _body(fields)
                if body is None:
                    self._skipped(topic, stream, raw_id)
                    continue
                for sub in list(stream.subs):
                    if entry_id > sub.after:
                        sub.deliver(topic, body)

    def _skipped(self, topic: str, stream: _Stream, raw_id: bytes) -> None:
        if stream.warned:  # once per topic: another application may write many such entries
            return
        stream.warned = True
        log.warning(
            "broker.error",
            topic=topic,
            error=(
                f"stream entry {raw_id.decode('ascii', 'replace')} has several fields and none"
                f" named 'data'; such entries of this topic are skipped"
            ),
        )

    async def _refused(self, exc: ResponseError) -> None:
        """XREAD was refused: end the topics Redis refuses now, the others read on."""
        ended = False
        for topic in list(self._streams):
            try:
                await self._tail(topic)
            except BrokerUnavailable:
                return  # the reader finds the connection trouble itself
            except BrokerError as refusal:
                ended = True
                for sub in self._streams.pop(topic, _Stream(last=(0, 0))).subs:
                    sub.active = False
                    sub.on_error(str(refusal))
        if not ended:  # not traced to a topic: do not spin on it
            self._report_error(f"Redis refused XREAD: {self._text(exc)}")
            await asyncio.sleep(self.config.max_reconnect_wait)

    # --- outages ------------------------------------------------------------------------------

    def _lost(self, reason: str) -> None:
        self._conn = self._reader_id = None
        self._mark_down(reason)
        if self._revive_task is None or self._revive_task.done():
            self._revive_task = asyncio.get_running_loop().create_task(self._revive())

    async def _revive(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._backoff.next_delay())
            try:
                conn, reader_id = await self._open()
            except (RedisError, OSError, TimeoutError) as exc:
                self._report_error(f"reconnecting to {self.describe()} failed: {self._text(exc)}")
                continue
            if self._closing:
                await self._drop(conn)
                return
            self._backoff.reset()
            # Up first, so that streams see broker-recovered before the missed entries.
            self._mark_up()
            self._start_reading(conn, reader_id)
            return

    # --- subscribe and publish --------------------------------------------------------------

    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> Subscription:
        self._require_up()
        _refuse_pattern(topic, "subscribe to")
        tail = await self._tail(topic)
        stream = self._streams.get(topic)
        if stream is not None:
            sub = _StreamSubscription(self, topic, on_message, on_error, tail)
            stream.subs.add(sub)
            return sub
        start = tail if self.config.start is None else self.config.start
        sub = _StreamSubscription(self, topic, on_message, on_error, start)
        self._streams[topic] = _Stream(last=start, subs={sub})
        self._generation += 1
        self._wake_reader()
        return sub

    def _detach(self, sub: _StreamSubscription) -> None:
        stream = self._streams.get(sub.topic)
        if stream is None:
            return
        stream.subs.discard(sub)
        if not stream.subs:  # a blocked XREAD may still name it: its entries are ignored
            del self._streams[sub.topic]

    async def _tail(self, topic: str) -> StreamId:
        """The id of the newest entry of ``topic``, ``0-0`` when it has none.

        Raises:
            BrokerError: Redis refuses to read the key (an ACL, another type).
            BrokerUnavailable: no answer.
        """
        client = self._require_client()
        try:
            newest = await asyncio.wait_for(client.xrevrange(topic, count=1), self.config.timeout)
        except ResponseError as exc:
            raise BrokerError(
                f"Redis refused the subscription to {topic!r}: {self._text(exc)}"
            ) from exc
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"reading {topic!r} failed: {self._text(exc)}") from exc
        newest_id = newest[0][0] if newest else None
        return (0, 0) if newest_id is None else parse_stream_id(newest_id)

    def _wake_reader(self) -> None:
        self._wake.set()
        if self._waker is None or self._waker.done():
            self._waker = asyncio.get_running_loop().create_task(self._unblock())

    async def _unblock(self) -> None:
        """Wake a blocked XREAD that does not name every topic yet, so it is sent anew."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout
        while not self._closing and not self._unblock_refused:
            blocked, reader_id, client = self._blocked_generation, self._reader_id, self._client
            if blocked is None or blocked >= self._generation or reader_id is None:
                return  # the next XREAD (or the one in progress) names every topic
            if client is None:
                return
            try:
                async with asyncio.timeout(self.config.timeout):
                    woken = await client.client_unblock(reader_id)
            except ResponseError as exc:
                self._refuse_unblock(exc)
                return
            except (RedisError, OSError, TimeoutError):
                return  # the reader finds the connection trouble itself
            if woken or loop.time() > deadline:
                return
            # Not blocked yet (the XREAD is still on its way) or answered already.
            await asyncio.sleep(_UNBLOCK_RETRY)

    def _refuse_unblock(self, exc: ResponseError) -> None:
        if self._unblock_refused:
            return
        self._unblock_refused = True
        log.warning(
            "broker.error",
            broker=self.describe(),
            error=(
                f"Redis refused CLIENT ID/UNBLOCK ({self._text(exc)}): a new topic is read"
                f" once the running XREAD ends, within {self.config.health_check_interval:g}s"
            ),
        )

    async def publish(self, topic: str, body: bytes) -> None:
        client = self._require_up()
        _refuse_pattern(topic, "publish to")
        maxlen = self.config.maxlen or None
        xadd = client.xadd(topic, {DATA_FIELD: body}, maxlen=maxlen, approximate=True)
        await self._publish_with(topic, xadd)


def _xread(positions: dict[str, StreamId], block_ms: int) -> list[str | int]:
    ids = [format_stream_id(last) for last in positions.values()]
    return ["XREAD", "COUNT", READ_COUNT, "BLOCK", block_ms, "STREAMS", *positions, *ids]


def _body(fields: list[bytes]) -> bytes | None:
    """The message body of an entry's ``[field, value, ...]``, None when it has none."""
    if len(fields) == 2:  # one field, whatever its name (another application's entry)
        return fields[1]
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == DATA_FIELD:
            return fields[index + 1]
    return None


def _refuse_pattern(topic: str, action: str) -> None:
    if is_pattern(topic):
        raise BrokerError(
            f"cannot {action} {topic!r}: Redis Streams are read by exact name and have no"
            f" patterns (glob characters * ? [); use pub/sub (without streams=1) for patterns"
        )


__all__: Sequence[str] = ("DATA_FIELD", "RedisStreamsBroker")
