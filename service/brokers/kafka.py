"""The Kafka driver: ``kafka://host:port[,host:port]`` (bootstrap servers), on aiokafka.

Owns one producer, one consumer and one small metadata client per process, the
partition assignment of that consumer, and the health loop that reports outages.

Kafka-specific semantics (on top of :mod:`service.brokers.base`):

* **Fan-out without consumer groups.** The consumer has no group id: each
  process reads every partition of each subscribed topic itself (manual
  ``assign``) and commits no offsets, so every instance sees every message.
* **From "now".** ``subscribe`` looks up the topic's partitions, resolves the
  latest offset of each (a ListOffsets request) and starts reading there; it
  returns once those positions are fixed, so anything published afterwards
  arrives. Order holds within a partition (Kafka orders nothing across them).
* **One consumer for all topics.** aiokafka's ``assign`` replaces the whole
  assignment and forgets every position, so the driver keeps its own position
  per partition (the offset after the last record it delivered) and re-seeks
  every partition after each reassignment: topics never skip or repeat a
  message when others come and go. One consumer means one fetch session and
  one set of connections however many topics a process reads; the price is a
  refetch of in-flight data on each reassignment, which is why additions are
  batched and a topic that loses its last subscriber stays assigned (its
  records are dropped) until the next health tick drops it.
* **Topics that do not exist yet.** Subscribing never creates a topic (topic
  names may come from browsers): the subscription succeeds, nothing is
  delivered and no error frame is sent, and the health loop looks the topic up
  every tick (``health_interval``, 1 s). Once it exists its partitions are
  read from their beginning, since everything in them was published after we
  subscribed. Partitions added later are found by the full refresh every
  ``refresh_interval`` (5 s) and read from their beginning too.
* **Topics that vanish** from the metadata (deleted, or a broker that came
  back without its data) are no longer read, and their positions are kept.
  When they reappear, reading resumes at the kept position if it still lies
  inside the partition (a transient view of a restarting broker replays
  nothing) and starts at the beginning otherwise (the topic was re-created).
* **Publishing** (``POST /publish``) uses one producer with ``acks=all``, no
  key and the message body as value. Every message of a topic goes to one
  partition chosen by a hash of the topic name, so messages published through
  unifrost keep their order. Whether publishing to a missing topic creates it
  is the broker's ``auto.create.topics.enable`` policy; the driver creates no
  topics itself. A publish that times out (5 s) reports the broker
  unavailable but may still be delivered later.
* **Names.** Kafka accepts 1-249 characters of ``[A-Za-z0-9._-]`` (not ``.``
  or ``..``); anything else is refused with a :class:`BrokerError` before the
  broker is asked. Kafka has no wildcards: ``*`` is just an invalid character.
* **Outages.** aiokafka retries quietly and reports nothing, so the health
  loop's metadata request doubles as a probe: a failure (no broker answers
  within 2 s) marks the broker down; reconnect probes then follow
  :class:`Backoff`; the first success re-reads every subscribed topic's
  partitions, checks each position against its partition's offsets (one that
  lies past the end means the broker lost the data: read what is there from
  the beginning) and marks the broker up. Subscriptions are kept throughout
  and resume from their positions. A broker that comes back empty and is
  refilled past our old position before we look cannot be told from a healthy
  one: the messages below that position are missed. aiokafka's own logger is
  set to CRITICAL (unless configured) as it would log every retry; the driver
  reports state as ``broker.*`` events.
* **Security.** ``kafka.security_protocol``, ``kafka.sasl_*`` and
  ``kafka.ssl_*`` are passed to aiokafka. ``user:password@`` in the URL is
  used as SASL credentials when the ``kafka.sasl_username`` key is unset;
  credentials with a protocol that cannot use them are a configuration error.
  Passwords never appear in ``describe()``, logs or errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import zlib
from collections.abc import Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaClient,
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerStoppedError,
    TopicPartition,
)
from aiokafka import errors as kafka_errors
from aiokafka.protocol.metadata import MetadataRequest  # type: ignore[import-untyped]
from aiokafka.protocol.offset import OffsetRequest  # type: ignore[import-untyped]

from service.brokers.backoff import Backoff
from service.brokers.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    CallbackSubscription,
    ErrorCallback,
    MessageCallback,
    Subscription,
    redact_url,
)
from service.brokers.kafka_config import KafkaOptions, client_options, topic_problem
from service.config import Settings
from service.log import get_logger, quiet_library_logs

log = get_logger(__name__)

CONNECT_TIMEOUT = 5.0
"""Bound on the first connection (the CLI waits for it before serving)."""
FETCH_MAX_WAIT_MS = 50
REQUEST_TIMEOUT = 5.0
"""Bound on one publish and on resolving the positions of a subscribe."""
PROBE_TIMEOUT = 2.0
"""A metadata request slower than this counts as the broker being unreachable."""
CLOSE_TIMEOUT = 2.0
HEALTH_INTERVAL = 1.0
REFRESH_INTERVAL = 5.0
RETRY_DELAY = 0.1

_EARLIEST = -2  # ListOffsets "timestamps"
_LATEST = -1


# --- metadata -----------------------------------------------------------------------


@dataclass(frozen=True)
class _TopicInfo:
    """One topic in a metadata response: its partitions (id -> leader node) or error."""

    partitions: Mapping[int, int]
    error: type[Exception] | None = None

    def problem(self, topic: str) -> str | None:
        """A reason to fail subscriptions to the topic; None if it exists or may later."""
        if self.error is None or self.error in (
            kafka_errors.UnknownTopicOrPartitionError,
            kafka_errors.LeaderNotAvailableError,  # being created
        ):
            return None
        if self.error is kafka_errors.TopicAuthorizationFailedError:
            return f"not authorized to read Kafka topic {topic!r}"
        if self.error is kafka_errors.InvalidTopicError:
            return f"Kafka rejected the topic name {topic!r}"
        return f"Kafka metadata error for topic {topic!r}: {self.error.__name__}"


def _parse_metadata(response: Any) -> dict[str, _TopicInfo]:
    found: dict[str, _TopicInfo] = {}
    for entry in response.topics:
        if response.API_VERSION == 0:
            error_code, topic, partitions = entry
        else:
            error_code, topic, _internal, partitions = entry
        if error_code:
            found[topic] = _TopicInfo({}, kafka_errors.for_code(error_code))
        else:
            # (error, partition, leader, replicas, isr, ...); leader -1 while electing
            found[topic] = _TopicInfo({int(p[1]): int(p[2]) for p in partitions})
    return found


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "no broker known"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, kafka_errors.NodeNotReadyError):  # aiokafka's word for "cannot connect"
        return "cannot connect to the broker"
    if isinstance(exc, kafka_errors.KafkaConnectionError) and "bootstrap" in str(exc):
        # aiokafka's text lists socket tuples; the URL in our message says where.
        return "no bootstrap server answered (address, TLS or SASL settings?)"
    return str(exc) or type(exc).__name__


# --- subscriptions -------------------------------------------------------------------


class _KafkaSubscription(CallbackSubscription):
    def __init__(
        self, broker: KafkaBroker, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> None:
        super().__init__(topic, on_message, on_error)
        self.broker = broker

    async def unsubscribe(self) -> None:
        self.broker._detach(self)

    def fail(self, message: str) -> None:
        self.active = False
        try:
            self.on_error(message)
        except Exception:
            log.exception("broker.error", topic=self.topic, op="on_error")


@dataclass
class _Topic:
    """A topic this process reads. No partitions: it does not exist (yet)."""

    subscriptions: list[_KafkaSubscription] = field(default_factory=list)
    partitions: frozenset[int] = frozenset()
    #: Positions of partitions that vanished from the metadata, kept in case it
    #: was a broker's transient view: if they return with the position still
    #: in range, reading resumes there instead of replaying them.
    parked: dict[int, int] = field(default_factory=dict)


_Waiter = tuple[_KafkaSubscription, "asyncio.Future[None]"]


# --- the driver ---------------------------------------------------------------------------


class KafkaBroker(Broker):
    """Kafka through one shared consumer, one producer and a metadata client."""

    scheme = "kafka"

    def __init__(
        self,
        url: str,
        settings: Settings | None = None,
        *,
        health_interval: float = HEALTH_INTERVAL,
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        """Parse and check the configuration; nothing connects before :meth:`connect`.

        Raises:
            ValueError: the URL or the ``kafka.*`` settings are unusable.
        """
        super().__init__()
        self._url = url
        self._options = KafkaOptions.from_url(url, settings or Settings())
        self._health_interval = health_interval
        self._refresh_interval = refresh_interval

        self._producer: Any = None
        self._consumer: Any = None
        self._meta: Any = None  # AIOKafkaClient for metadata and ListOffsets requests
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._joiner: asyncio.Task[None] | None = None
        self._closed = False

        self._topics: dict[str, _Topic] = {}
        #: Next offset to deliver, per partition of every live topic.
        self._positions: dict[Any, int] = {}
        #: What the consumer was last assigned (may still hold dropped topics).
        self._assigned: frozenset[Any] = frozenset()
        self._joining: list[_Waiter] = []
        self._lock = asyncio.Lock()  # one assignment change at a time
        self._wake = asyncio.Event()  # run a health tick now

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> KafkaBroker:
        return cls(url, settings)

    def describe(self) -> str:
        return redact_url(self._url)

    # --- connection ------------------------------------------------------------------

    async def connect(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the Kafka driver is closed")
        if self._producer is not None:
            return  # already connected
        quiet_library_logs("aiokafka")
        common = self._client_options()
        size_limit = max(1048576, self._options.max_message_bytes + 65536)
        timeout_ms = int(REQUEST_TIMEOUT * 1000) - 1000  # answer before our own bound
        self._producer = AIOKafkaProducer(
            **common,
            acks="all",
            request_timeout_ms=timeout_ms,
            max_request_size=size_limit,
        )
        self._consumer = AIOKafkaConsumer(
            **common,
            group_id=None,
            enable_auto_commit=False,
            # Only used when a position is out of range: the broker lost data we had
            # read (restart without storage) or retention passed us. Everything still
            # there was published after we subscribed, so read it.
            auto_offset_reset="earliest",
            request_timeout_ms=timeout_ms,
            max_partition_fetch_bytes=size_limit,
            # The broker answers a fetch early once data arrives, but not every
            # Kafka-compatible broker does: bound the wait for live latency.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        # Our own requests only; a long max age keeps its background refresh
        # (which would ask for every topic of the cluster) out of the way.
        self._meta = AIOKafkaClient(
            **common,
            request_timeout_ms=int(PROBE_TIMEOUT * 1000),
            metadata_max_age_ms=24 * 3600 * 1000,
        )
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    self._producer.start(), self._consumer.start(), self._meta.bootstrap()
                ),
                CONNECT_TIMEOUT,
            )
        except Exception as exc:
            await self._stop_clients()
            raise BrokerUnavailable(
                f"cannot connect to Kafka at {self.describe()}: {_reason(exc)}"
            ) from None
        self._reader = asyncio.create_task(self._read(), name="kafka-reader")
        self._watcher = asyncio.create_task(self._watch(), name="kafka-health")
        self._mark_up()

    def _client_options(self) -> dict[str, Any]:
        return client_options(self._options)

    async def close(self) -> None:
        self._up = False  # closed on purpose: nobody to tell
        if self._closed:
            return
        self._closed = True
        for state in self._topics.values():
            for sub in state.subscriptions:
                sub.active = False
        self._topics.clear()
        self._positions.clear()
        tasks = [task for task in (self._reader, self._watcher, self._joiner) if task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_waiters(self._joining, BrokerUnavailable, "the Kafka driver was closed")
        self._joining = []
        await self._stop_clients()

    async def _stop_clients(self) -> None:
        producer, consumer, meta = self._producer, self._consumer, self._meta
        self._producer = self._consumer = self._meta = None
        stops: list[Coroutine[Any, Any, None]] = []
        if producer is not None:
            stops.append(_stop(producer.stop(), fallback=producer.client.close))
        if consumer is not None:
            stops.append(_stop(consumer.stop()))
        if meta is not None:
            stops.append(_stop(meta.close()))
        await asyncio.gather(*stops)

    def _ensure_usable(self) -> None:
        if self._closed or self._producer is None:
            raise BrokerUnavailable("the Kafka driver is not connected")
        if not self._up:
            raise BrokerUnavailable("Kafka is unreachable")

    # --- publishing ------------------------------------------------------------------

    async def publish(self, topic: str, body: bytes) -> None:
        problem = topic_problem(topic)
        if problem:
            raise BrokerError(problem)
        self._ensure_usable()
        try:
            await asyncio.wait_for(self._send(topic, body), REQUEST_TIMEOUT)
        except TimeoutError:
            raise BrokerUnavailable(
                f"Kafka did not acknowledge the message within {REQUEST_TIMEOUT:g}s"
            ) from None
        except kafka_errors.KafkaError as exc:
            raise self._publish_error(topic, exc) from None
        state = self._topics.get(topic)
        if state is not None and not state.partitions:
            self._wake.set()  # we may just have created a topic we wait for

    async def _send(self, topic: str, body: bytes) -> None:
        producer = self._producer
        # Waits for the topic's metadata; brokers that auto-create topics do it here.
        partitions = sorted(await producer.partitions_for(topic))
        # One partition per topic keeps what we publish in order.
        partition = partitions[zlib.crc32(topic.encode()) % len(partitions)]
        await producer.send_and_wait(topic, body, partition=partition)

    def _publish_error(self, topic: str, exc: Exception) -> BrokerError:
        if isinstance(exc, kafka_errors.UnknownTopicOrPartitionError) and self._up:
            return BrokerError(
                f"Kafka topic {topic!r} does not exist and the broker did not create it"
            )
        if isinstance(exc, kafka_errors.TopicAuthorizationFailedError):
            return BrokerError(f"not authorized to publish to Kafka topic {topic!r}")
        if isinstance(exc, kafka_errors.MessageSizeTooLargeError):
            return BrokerError("the message is larger than Kafka accepts")
        if getattr(exc, "retriable", False) or not self._up:
            return BrokerUnavailable(f"Kafka did not take the message: {_reason(exc)}")
        return BrokerError(f"Kafka refused the message: {_reason(exc)}")

    # --- subscribing -----------------------------------------------------------------

    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> Subscription:
        problem = topic_problem(topic)
        if problem:
            raise BrokerError(problem)
        self._ensure_usable()
        sub = _KafkaSubscription(self, topic, on_message, on_error)
        state = self._topics.get(topic)
        if state is not None:  # already read live from a position fixed earlier
            state.subscriptions.append(sub)
            return sub
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._joining.append((sub, waiter))
        if self._joiner is None or self._joiner.done():
            self._joiner = asyncio.create_task(self._join_queued(), name="kafka-join")
        try:
            await waiter
        except asyncio.CancelledError:
            self._detach(sub)  # queued or already attached: either way, gone
            raise
        return sub

    def _detach(self, sub: _KafkaSubscription) -> None:
        if not sub.active:
            return
        sub.active = False
        state = self._topics.get(sub.topic)
        if state is None or sub not in state.subscriptions:
            return
        state.subscriptions.remove(sub)
        if not state.subscriptions:
            # The consumer keeps the partitions until the next tick (see module doc).
            self._forget(sub.topic)

    def _forget(self, topic: str) -> None:
        state = self._topics.pop(topic, None)
        if state is not None:
            for partition in state.partitions:
                self._positions.pop(TopicPartition(topic, partition), None)

    async def _join_queued(self) -> None:
        """Fix the start positions of every queued subscription, in batches."""
        async with self._lock:
            while self._joining:
                batch, self._joining = self._joining, []
                try:
                    await self._join(batch)
                finally:  # cancelled by close(): nobody may wait forever
                    self._fail_waiters(batch, BrokerUnavailable, "the Kafka driver was closed")

    async def _join(self, batch: list[_Waiter]) -> None:
        wanted: dict[str, list[_Waiter]] = {}
        for sub, waiter in batch:
            if not sub.active or waiter.done():
                continue
            state = self._topics.get(sub.topic)
            if state is not None:  # went live while this one was queued
                state.subscriptions.append(sub)
                waiter.set_result(None)
            else:
                wanted.setdefault(sub.topic, []).append((sub, waiter))
        if not wanted:
            return
        try:
            found, starts = await asyncio.wait_for(self._locate(wanted, _LATEST), REQUEST_TIMEOUT)
        except Exception as exc:
            unavailable = isinstance(exc, BrokerUnavailable | TimeoutError) or not self._up
            kind = BrokerUnavailable if unavailable else BrokerError
            self._fail_waiters(batch, kind, f"cannot subscribe: {_reason(exc)}")
            return
        added = [self._start_topic(topic, ws, found[topic], starts) for topic, ws in wanted.items()]
        if any(added) or self._positions.keys() != self._assigned:
            self._commit()

    def _start_topic(
        self,
        topic: str,
        waiters: list[_Waiter],
        info: _TopicInfo,
        starts: Mapping[Any, int],
    ) -> bool:
        """Make ``topic`` live for its waiters; True if it brought partitions to read."""
        problem = info.problem(topic)
        if problem:
            self._fail_waiters(waiters, BrokerError, problem)
            return False
        subs = [sub for sub, _ in waiters if sub.active]
        if subs:
            self._topics[topic] = _Topic(subs, frozenset(info.partitions))
            for partition in info.partitions:
                tp = TopicPartition(topic, partition)
                self._positions[tp] = starts[tp]
        for _, waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return bool(subs and info.partitions)

    @staticmethod
    def _fail_waiters(waiters: list[_Waiter], kind: type[BrokerError], message: str) -> None:
        for _, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(kind(message))

    async def _locate(
        self, topics: Collection[str], which: int
    ) -> tuple[dict[str, _TopicInfo], dict[Any, int]]:
        """Partitions of ``topics`` and the ``which`` offset of each; retries
        leadership changes until cancelled."""
        while True:
            found = await self._metadata(topics)
            leaders = {
                TopicPartition(topic, partition): leader
                for topic in topics
                if found[topic].error is None
                for partition, leader in found[topic].partitions.items()
            }
            try:
                return found, await self._list_offsets(leaders, which)
            except kafka_errors.KafkaError as exc:
                if not exc.retriable:
                    raise
            await asyncio.sleep(RETRY_DELAY)

    def _commit(self) -> None:
        """Point the consumer at exactly the live partitions, each at its position.

        ``assign`` drops every position of the consumer, so each is set again
        here, synchronously: no record can be handed out in between.
        """
        consumer = self._consumer
        if consumer is None:
            return
        partitions = list(self._positions)
        consumer.assign(partitions)
        for tp, offset in self._positions.items():
            consumer.seek(tp, offset)
        self._assigned = frozenset(partitions)

    # --- reading --------------------------------------------------------------------

    async def _read(self) -> None:
        consumer = self._consumer
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=1000)
            except ConsumerStoppedError:
                return
            except kafka_errors.TopicAuthorizationFailedError as exc:
                topic = str(exc.args[0]) if exc.args else ""
                self._fail_topic(topic, f"not authorized to read Kafka topic {topic!r}")
                continue
            except Exception as exc:  # the reader must survive anything
                self._report_error(f"reading from Kafka failed: {_reason(exc)}")
                await asyncio.sleep(RETRY_DELAY)
                continue
            self._dispatch(batch)

    def _dispatch(self, batch: Mapping[Any, list[Any]]) -> None:
        for tp, records in batch.items():
            if not records:
                continue
            if tp in self._positions:
                self._positions[tp] = int(records[-1].offset) + 1
            state = self._topics.get(tp.topic)
            if state is None:  # dropped, not yet unassigned
                continue
            for record in records:
                body = record.value if record.value is not None else b""  # tombstones
                # Copy: a callback may unsubscribe while we iterate.
                for sub in tuple(state.subscriptions):
                    sub.deliver(tp.topic, body)

    def _fail_topic(self, topic: str, message: str) -> None:
        state = self._topics.get(topic)
        if state is None:
            return
        self._forget(topic)
        for sub in state.subscriptions:
            sub.fail(message)

    # --- health, outages and partition changes ---------------------------------------

    async def _watch(self) -> None:
        backoff = Backoff()
        last_full = time.monotonic()
        while True:
            if self._up:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._health_interval)
                self._wake.clear()
            recovering = not self._up
            full = recovering or time.monotonic() - last_full >= self._refresh_interval
            try:
                async with self._lock:
                    await self._tick(full, recovering)
            except Exception as exc:
                if isinstance(exc, BrokerUnavailable) and self._up:
                    self._mark_down(str(exc))
                else:
                    what = "reconnect attempt" if recovering else "metadata refresh"
                    self._report_error(f"Kafka {what} failed: {_reason(exc)}")
                if not self._up:
                    await asyncio.sleep(backoff.next_delay())
                continue
            if full:
                last_full = time.monotonic()
            if recovering:
                backoff.reset()
                self._mark_up()

    async def _tick(self, full: bool, recovering: bool) -> None:
        """One health probe, which doubles as the partition refresh.

        Every tick asks for the topics that do not exist yet (usually none, so
        the request is cheap); a full tick asks for every subscribed topic.
        """
        if full:
            topics = list(self._topics)
        else:
            topics = [topic for topic, state in self._topics.items() if not state.partitions]
        found = await self._metadata(topics)
        await self._apply(found, recovering)
        if self._positions.keys() != self._assigned:
            self._commit()  # drops topics that lost their last subscriber

    async def _apply(self, found: Mapping[str, _TopicInfo], recovering: bool) -> None:
        """Follow partitions that appeared or vanished; after an outage also check
        that each position is still inside its partition (see :meth:`_start_of`)."""
        seen: dict[str, _Topic] = {}
        for topic, info in found.items():
            state = self._topics.get(topic)
            if state is None:
                continue
            if info.error is kafka_errors.TopicAuthorizationFailedError:  # revoked
                self._fail_topic(topic, f"not authorized to read Kafka topic {topic!r}")
            elif info.error in (None, kafka_errors.UnknownTopicOrPartitionError):
                seen[topic] = state
            # else a transient error (leader election, ...): look again next time
        leaders: dict[Any, int] = {}
        known: dict[Any, int] = {}  # positions to check, as they are before we ask
        for topic, state in seen.items():
            for partition, leader in found[topic].partitions.items():
                tp = TopicPartition(topic, partition)
                position = state.parked.get(partition, self._positions.get(tp))
                if partition not in state.partitions or recovering:
                    leaders[tp] = leader
                    if position is not None:
                        known[tp] = position
        begins = await self._list_offsets(leaders, _EARLIEST)
        ends = await self._list_offsets({tp: leaders[tp] for tp in known}, _LATEST)
        # From here on nothing awaits: the changes land together.
        changed = False
        for topic, state in seen.items():
            if self._topics.get(topic) is state:  # else unsubscribed meanwhile
                now = frozenset(found[topic].partitions)
                changed |= self._follow(topic, state, now, begins, ends, known)
        if changed:
            self._commit()

    def _follow(
        self,
        topic: str,
        state: _Topic,
        now: frozenset[int],
        begins: Mapping[Any, int],
        ends: Mapping[Any, int],
        known: Mapping[Any, int],
    ) -> bool:
        before = state.partitions
        for partition in before - now:
            position = self._positions.pop(TopicPartition(topic, partition), None)
            if position is not None:
                state.parked[partition] = position
        restarted: list[int] = []
        for partition in sorted(now):
            tp = TopicPartition(topic, partition)
            if tp not in begins:
                continue  # not checked this time
            current = state.parked.pop(partition, self._positions.get(tp))
            start = self._start_of(begins[tp], ends.get(tp), known.get(tp), current)
            if start != current:
                self._positions[tp] = start
                if current is not None:
                    restarted.append(partition)
            elif current is not None:
                self._positions[tp] = current
        state.partitions = now
        if now == before and not restarted:
            return False
        log.info(
            "broker.partitions_changed",
            topic=topic,
            partitions=sorted(now),
            before=sorted(before),
            restarted=restarted,
        )
        return True

    @staticmethod
    def _start_of(begin: int, end: int | None, known: int | None, current: int | None) -> int:
        """Where to read a partition that is new, returned, or checked after an outage.

        ``known`` is our position before the offsets were asked for, ``current``
        our position now (the consumer may have read meanwhile).
        """
        if known is None or current is None:
            return begin  # new: all of it was published after we subscribed
        if end is not None and begin <= known <= end:
            return current  # still valid: carry on, nothing replayed or skipped
        if current != known:
            return current  # the consumer already restarted it (out-of-range reset)
        # Past the end: the broker lost the partition (a restart without storage,
        # a re-created topic); everything there now is new to us. Before the
        # beginning: retention deleted what we had not read yet.
        return begin

    # --- raw requests --------------------------------------------------------------------

    async def _metadata(self, topics: Collection[str]) -> dict[str, _TopicInfo]:
        """Metadata for ``topics`` (none: just the brokers) without creating any.

        Raises:
            BrokerUnavailable: no broker answered within :data:`PROBE_TIMEOUT`.
        """
        request = MetadataRequest(list(topics), allow_auto_topic_creation=False)
        response = await self._ask_any(request)
        if response.brokers:
            self._meta.cluster.update_metadata(response)  # keeps the node list current
        found = _parse_metadata(response)
        for topic in topics:  # a broker may leave out what it does not know
            found.setdefault(topic, _TopicInfo({}, kafka_errors.UnknownTopicOrPartitionError))
        return found

    async def _ask_any(self, request: Any) -> Any:
        meta = self._meta
        if meta is None:
            raise BrokerUnavailable("the Kafka driver is closed")
        last: BaseException | None = None
        for attempt in range(2):
            nodes = [broker.nodeId for broker in meta.cluster.brokers()]
            random.shuffle(nodes)
            for node in nodes:
                try:
                    return await asyncio.wait_for(meta.send(node, request), PROBE_TIMEOUT)
                except (kafka_errors.KafkaError, OSError, TimeoutError) as exc:
                    last = exc
            if attempt:
                break
            # Every broker we knew failed; the bootstrap servers may name others
            # (a cluster replaced behind the same bootstrap addresses).
            try:
                await asyncio.wait_for(meta.bootstrap(), PROBE_TIMEOUT)
            except (kafka_errors.KafkaError, OSError, TimeoutError) as exc:
                last = last or exc
                break
        raise BrokerUnavailable(f"Kafka is unreachable: {_reason(last)}")

    async def _list_offsets(self, leaders: Mapping[Any, int], which: int) -> dict[Any, int]:
        """The earliest or latest offset of each partition, asking each leader once."""
        by_node: dict[int, dict[str, list[tuple[int, int]]]] = {}
        for tp, node in leaders.items():
            if node < 0:
                raise kafka_errors.LeaderNotAvailableError(f"{tp.topic}[{tp.partition}]")
            by_node.setdefault(node, {}).setdefault(tp.topic, []).append((tp.partition, which))
        requests = [
            asyncio.wait_for(
                self._meta.send(node, OffsetRequest(-1, 0, list(topics.items()))), PROBE_TIMEOUT
            )
            for node, topics in by_node.items()
        ]
        offsets: dict[Any, int] = {}
        for response in await asyncio.gather(*requests):
            for topic, partitions in response.topics:
                for partition, error_code, *rest in partitions:
                    if error_code:
                        error = kafka_errors.for_code(error_code)
                        raise error(f"{topic}[{partition}]")
                    if response.API_VERSION == 0:  # a list of offsets
                        offset = rest[0][0] if rest[0] else 0
                    else:  # timestamp, offset[, leader epoch]
                        offset = rest[1]
                    offsets[TopicPartition(topic, partition)] = int(offset)
        return offsets


async def _stop(
    stopping: Coroutine[Any, Any, None],
    fallback: Any = None,
) -> None:
    """Await a client's stop, bounded; never raises (the broker may be gone)."""
    try:
        await asyncio.wait_for(stopping, CLOSE_TIMEOUT)
    except Exception as exc:
        log.warning("broker.error", op="close", error=_reason(exc))
        if fallback is not None:  # at least drop the connections
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fallback(), CLOSE_TIMEOUT)
