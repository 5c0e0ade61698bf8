"""The topic hub: one broker subscription per topic, fanned out in-process.

Owns the map topic -> consumers. The first consumer of a topic makes the broker
subscription; the last one to leave releases it. Each broker message is encoded
once here and pushed to every consumer of its topic without any per-delivery
coroutine, queue or future; metrics are counted once per fan-out.

Broker trouble never raises out of here: a failed topic reaches its consumers
as a ``subscription-failure`` frame, a lost connection as ``broker-unavailable``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from functools import partial

from service import sse
from service.brokers.base import Broker, BrokerError, Subscription
from service.consumers.consumer import Consumer, DropTally
from service.log import get_logger
from service.metrics import Metrics

log = get_logger("unifrost.hub")


class _Topic:
    __slots__ = ("consumers", "name", "ready", "subscription")

    def __init__(self, name: str, ready: asyncio.Future[None]) -> None:
        self.name = name
        # A dict keeps fan-out order stable (join order); keyed by consumer id.
        self.consumers: dict[str, Consumer] = {}
        self.subscription: Subscription | None = None
        self.ready = ready


class TopicHub:
    """Reference-counted broker subscriptions and the fan-out hot path."""

    def __init__(self, broker: Broker, metrics: Metrics, event_name: str = "message") -> None:
        self.broker = broker
        self.metrics = metrics
        self.event_name = event_name
        self.drops = DropTally()
        self._topics: dict[str, _Topic] = {}
        self._pairs = 0
        #: Who hears broker status frames; the manager points this at every
        #: consumer with an open stream, subscribed or not.
        self.status_audience: Callable[[], Iterable[Consumer]] = self._all_consumers
        broker.set_listener(self)

    @property
    def topics(self) -> list[str]:
        return sorted(self._topics)

    # --- membership -------------------------------------------------------------

    async def add(self, topic: str, consumer: Consumer) -> None:
        """Make ``consumer`` receive ``topic``; returns once messages flow.

        Raises:
            BrokerError: the broker subscription could not be made.
        """
        entry = self._topics.get(topic)
        if entry is None:
            entry = _Topic(topic, asyncio.get_running_loop().create_future())
            self._topics[topic] = entry
            self._join(entry, consumer)
            await self._subscribe(entry)
        else:
            self._join(entry, consumer)
            if not entry.ready.done():
                # wait() neither raises the failure (handled just below, so this
                # consumer leaves the topic) nor cancels ``ready`` for the others.
                await asyncio.wait((entry.ready,))
        if entry.ready.exception() is not None:
            self._leave(entry, consumer)
            raise BrokerError(str(entry.ready.exception()))

    def remove(self, topic: str, consumer: Consumer) -> None:
        entry = self._topics.get(topic)
        if entry is not None and consumer.id in entry.consumers:
            self._leave(entry, consumer)
            if not entry.consumers and entry.ready.done():
                self._release(entry)

    def _join(self, entry: _Topic, consumer: Consumer) -> None:
        if consumer.id not in entry.consumers:
            entry.consumers[consumer.id] = consumer
            self._pairs += 1
            self.metrics.subscriptions.set(self._pairs)

    def _leave(self, entry: _Topic, consumer: Consumer) -> None:
        if entry.consumers.pop(consumer.id, None) is not None:
            self._pairs -= 1
            self.metrics.subscriptions.set(self._pairs)

    async def _subscribe(self, entry: _Topic) -> None:
        try:
            entry.subscription = await self.broker.subscribe(
                entry.name, partial(self._on_message, entry), partial(self._on_error, entry)
            )
        except Exception as exc:  # any driver failure becomes a per-topic error
            self.metrics.broker_errors.inc()
            log.warning("broker.error", topic=entry.name, error=str(exc))
            self._forget(entry)
            entry.ready.set_exception(
                exc if isinstance(exc, BrokerError) else BrokerError(str(exc))
            )
            entry.ready.exception()  # consumed here; callers re-raise their own
            return
        entry.ready.set_result(None)
        self.metrics.broker_subscriptions.set(len(self._topics))
        if not entry.consumers:  # everyone left while we were subscribing
            self._release(entry)

    def _release(self, entry: _Topic) -> None:
        self._forget(entry)
        if entry.subscription is not None:
            asyncio.get_running_loop().create_task(self._unsubscribe(entry))

    def _forget(self, entry: _Topic) -> None:
        if self._topics.get(entry.name) is entry:
            del self._topics[entry.name]
        self.metrics.broker_subscriptions.set(len(self._topics))

    async def _unsubscribe(self, entry: _Topic) -> None:
        assert entry.subscription is not None
        try:
            await entry.subscription.unsubscribe()
        except Exception as exc:
            log.warning("broker.error", topic=entry.name, error=str(exc), op="unsubscribe")

    # --- the hot path -------------------------------------------------------------

    def _on_message(self, entry: _Topic, topic: str, body: bytes) -> None:
        received = time.perf_counter()
        metrics = self.metrics
        metrics.messages_received.inc()
        consumers = entry.consumers
        if not consumers:
            return
        frame = sse.topic_frame(topic, body, self.event_name)
        delivered = 0
        written_bytes = 0
        # push() never changes topic membership, so iterating the live dict is safe.
        for consumer in consumers.values():
            written = consumer.push(frame)
            if written:
                delivered += 1
                written_bytes += written
        if delivered:
            metrics.messages_delivered.inc(delivered)
            metrics.delivered_bytes.inc(written_bytes)
            metrics.delivery_latency.observe(time.perf_counter() - received)
        if self.drops.count:
            metrics.messages_dropped.labels("buffer_full").inc(self.drops.count)
            self.drops.count = 0

    # --- broker trouble -------------------------------------------------------------

    def _on_error(self, entry: _Topic, message: str) -> None:
        """The broker killed ``entry``'s subscription: tell and unsubscribe its consumers."""
        self.metrics.broker_errors.inc()
        log.warning("broker.error", topic=entry.name, error=message)
        if self._topics.get(entry.name) is not entry:
            return
        self._forget(entry)
        frame = sse.error_frame(sse.SUBSCRIPTION_FAILURE, message, entry.name)
        for consumer in list(entry.consumers.values()):
            self._leave(entry, consumer)
            consumer.topics.discard(entry.name)
            if consumer.stream is not None:
                consumer.stream.send_control(frame)

    def messages_dropped(self, topic: str, count: int, reason: str) -> None:
        """A driver lost ``count`` messages of ``topic`` (e.g. a slow-consumer limit)."""
        self.metrics.messages_dropped.labels("broker").inc(count)
        log.warning("broker.messages_dropped", topic=topic, count=count, reason=reason)
        entry = self._topics.get(topic)
        if entry is not None:
            message = f"{count} message(s) lost by the broker client: {reason}"
            self._broadcast(
                entry.consumers.values(),
                sse.error_frame(sse.MESSAGES_DROPPED, message, topic, count=count),
            )

    def broker_error(self, message: str) -> None:
        self.metrics.broker_errors.inc()
        log.warning("broker.error", broker=self.broker.describe(), error=message)

    def broker_down(self, reason: str) -> None:
        self.metrics.broker_up.set(0)
        log.warning("broker.disconnected", broker=self.broker.describe(), reason=reason)
        self._broadcast(self.status_audience(), sse.error_frame(sse.BROKER_UNAVAILABLE, reason))

    def broker_up(self, reconnected: bool) -> None:
        self.metrics.broker_up.set(1)
        log.info("broker.connected", broker=self.broker.describe(), reconnected=reconnected)
        if reconnected:
            self.metrics.broker_reconnects.inc()
            self._broadcast(
                self.status_audience(),
                sse.error_frame(sse.BROKER_RECOVERED, "broker connection restored"),
            )

    def _all_consumers(self) -> list[Consumer]:
        unique: dict[str, Consumer] = {}
        for entry in self._topics.values():
            unique.update(entry.consumers)
        return list(unique.values())

    @staticmethod
    def _broadcast(consumers: Iterable[Consumer], frame: bytes) -> None:
        for consumer in list(consumers):
            if consumer.stream is not None:
                consumer.stream.send_control(frame)
