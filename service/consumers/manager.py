"""The consumer manager: lifecycle, TTL eviction and stream attachment.

Runs on the IOLoop. A consumer with no open stream is evicted ``consumer_ttl``
after it was created or after its last stream closed; its clock (see
:mod:`service.consumers.expiry`) starts and stops only on creation, attach and
detach, never per message.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

from tornado.ioloop import PeriodicCallback

from service import sse
from service.brokers.base import BrokerError
from service.consumers.connection import WriteBatcher
from service.consumers.consumer import Consumer, StreamSink, new_consumer_id
from service.consumers.expiry import ExpiryQueue
from service.consumers.hub import TopicHub
from service.log import get_logger
from service.metrics import Metrics

log = get_logger("unifrost.consumers")

LIMIT_EXCEEDED = "limit-exceeded"


class ConsumerExists(Exception):
    """A consumer with the requested custom id already exists."""


class TooManyConsumers(Exception):
    """``limits.max_consumers`` is reached."""


@dataclass(frozen=True)
class ConsumerPolicy:
    """The knobs of consumer lifecycle, taken from the settings."""

    ttl: float = 60.0
    max_messages: int = 1000
    max_bytes: int = 1024 * 1024
    max_consumers: int | None = None
    max_subscriptions: int = 100
    heartbeat: float = 15.0


@dataclass(frozen=True)
class TopicError:
    topic: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"topic": self.topic, "code": self.code, "message": self.message}


class ConsumerManager:
    """Creates, finds, subscribes, attaches and evicts consumers."""

    def __init__(self, hub: TopicHub, metrics: Metrics, policy: ConsumerPolicy) -> None:
        self.hub = hub
        self.metrics = metrics
        self.policy = policy
        self._consumers: dict[str, Consumer] = {}
        self._connected: dict[str, Consumer] = {}
        #: Consumers without a stream, waiting out their TTL.
        self._expiry: ExpiryQueue[Consumer] = ExpiryQueue(policy.ttl, self._expire)
        hub.status_audience = lambda: self._connected.values()
        #: Coalesces each IOLoop iteration's writes into one send per stream.
        self.batcher = WriteBatcher()
        # Heartbeat: one sweep for all streams, twice per interval, so a stream
        # idle for a whole interval always gets a comment frame.
        self._heartbeat = PeriodicCallback(self._beat, policy.heartbeat * 1000 / 2)
        self._heartbeat.start()

    # --- lookup -----------------------------------------------------------------

    def get(self, consumer_id: str) -> Consumer | None:
        return self._consumers.get(consumer_id)

    def __len__(self) -> int:
        return len(self._consumers)

    def page(self, limit: int, after: str | None) -> tuple[list[str], str | None]:
        """Consumer ids in sorted order, ``limit`` at a time after ``after``."""
        ids = sorted(i for i in self._consumers if after is None or i > after)
        page = ids[:limit]
        return page, (page[-1] if len(ids) > limit else None)

    @property
    def connected_count(self) -> int:
        return len(self._connected)

    # --- lifecycle ------------------------------------------------------------------

    async def create(
        self, consumer_id: str | None = None, topics: Iterable[str] = ()
    ) -> tuple[Consumer, list[TopicError]]:
        """Create a consumer (and subscribe it to ``topics``).

        Raises:
            ConsumerExists: ``consumer_id`` is taken.
            TooManyConsumers: the configured limit is reached.
        """
        limit = self.policy.max_consumers
        if limit is not None and len(self._consumers) >= limit:
            raise TooManyConsumers(f"limit of {limit} consumers reached")
        if consumer_id is None:
            consumer_id = new_consumer_id()
        elif consumer_id in self._consumers:
            raise ConsumerExists(f"consumer {consumer_id!r} already exists")
        consumer = Consumer(
            consumer_id, self.policy.max_messages, self.policy.max_bytes, self.hub.drops
        )
        self._consumers[consumer_id] = consumer
        self.metrics.consumers_created.inc()
        self.metrics.consumers.set(len(self._consumers))
        self._expiry.arm(consumer)
        log.info("consumer.created", consumer_id=consumer_id)
        errors = await self.update(consumer, add=topics) if topics else []
        return consumer, errors

    async def update(
        self, consumer: Consumer, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> list[TopicError]:
        """Add and remove subscriptions; idempotent. Returns per-topic errors."""
        errors: list[TopicError] = []
        removed = [t for t in dict.fromkeys(remove) if t in consumer.topics]
        for topic in removed:
            consumer.topics.discard(topic)
            self.hub.remove(topic, consumer)
        wanted = [t for t in dict.fromkeys(add) if t not in consumer.topics]
        added: list[str] = []
        for topic in wanted:
            if consumer.closed:
                break
            if len(consumer.topics) >= self.policy.max_subscriptions:
                errors.append(
                    TopicError(
                        topic,
                        LIMIT_EXCEEDED,
                        f"limit of {self.policy.max_subscriptions} subscriptions reached",
                    )
                )
                continue
            consumer.topics.add(topic)
            try:
                await self.hub.add(topic, consumer)
            except BrokerError as exc:
                consumer.topics.discard(topic)
                errors.append(TopicError(topic, sse.SUBSCRIPTION_FAILURE, str(exc)))
                continue
            if consumer.closed:  # deleted or evicted while we waited for the broker
                self.hub.remove(topic, consumer)
                break
            added.append(topic)
        if added or removed:
            log.info(
                "subscription.changed",
                consumer_id=consumer.id,
                added=added,
                removed=removed,
                subscriptions=sorted(consumer.topics),
            )
        return errors

    def delete(self, consumer_id: str) -> bool:
        """Remove a consumer now; its open stream gets ``consumer closed``."""
        consumer = self._consumers.get(consumer_id)
        if consumer is None:
            return False
        self._evict(consumer, "deleted")
        return True

    def _evict(self, consumer: Consumer, reason: str) -> None:
        if consumer.closed:
            return
        consumer.closed = True
        self._expiry.disarm(consumer)
        if consumer.stream is not None:
            consumer.stream.close("consumer_closed", sse.closed_frame(sse.CLOSED_BY_DELETE))
        for topic in list(consumer.topics):
            self.hub.remove(topic, consumer)
        self._consumers.pop(consumer.id, None)
        self.metrics.consumers_evicted.labels(reason).inc()
        self.metrics.consumers.set(len(self._consumers))
        log.info("consumer.evicted", consumer_id=consumer.id, reason=reason)

    def _expire(self, consumer: Consumer) -> None:
        self._evict(consumer, "ttl")

    # --- streams ----------------------------------------------------------------------

    def attach(
        self, consumer: Consumer, stream: StreamSink, last_event_id: int | None
    ) -> tuple[list[bytes], tuple[int, int] | None]:
        """Make ``stream`` the consumer's only stream; returns what to replay first.

        An older stream is closed with ``replaced``. Replay and attachment happen
        in one IOLoop step, so nothing published meanwhile is lost or doubled.
        """
        if consumer.stream is not None:
            consumer.stream.close("replaced", sse.closed_frame(sse.CLOSED_REPLACED))
        self._expiry.disarm(consumer)
        frames, gap = consumer.replay_from(last_event_id)
        consumer.stream = stream
        consumer.delivered_id = consumer.last_id
        consumer.disconnected_at = None
        self._connected[consumer.id] = consumer
        if frames:
            self.metrics.messages_replayed.inc(len(frames))
        return frames, gap

    def detach(self, consumer: Consumer, stream: StreamSink) -> None:
        """``stream`` ended; start the TTL clock unless a newer stream took over."""
        if consumer.stream is not stream:
            return
        consumer.stream = None
        self._connected.pop(consumer.id, None)
        if not consumer.closed:
            consumer.disconnected_at = time.time()
            self._expiry.arm(consumer)

    def _beat(self) -> None:
        for consumer in list(self._connected.values()):
            if consumer.stream is not None:
                consumer.stream.heartbeat()

    # --- shutdown ---------------------------------------------------------------------

    def close_streams(self, retry: float) -> None:
        """Shutdown: every open stream gets a jittered ``retry:`` and ``server shutting down``.

        The jitter spreads the reconnect wave over ``[retry, 2 * retry]``.
        """
        for consumer in list(self._connected.values()):
            if consumer.stream is not None:
                retry_ms = int(retry * 1000 * (1 + random.random()))
                farewell = sse.retry_frame(retry_ms) + sse.closed_frame(sse.CLOSED_SHUTDOWN)
                consumer.stream.close("shutdown", farewell)

    async def close(self) -> None:
        """Stop timers and drop every consumer (streams must be closed first)."""
        self._heartbeat.stop()
        self._expiry.close()
        for consumer in list(self._consumers.values()):
            consumer.closed = True
            for topic in list(consumer.topics):
                self.hub.remove(topic, consumer)
        self._consumers.clear()
        self.metrics.consumers.set(0)
        await asyncio.sleep(0)  # let pending unsubscribe tasks start
