"""The RabbitMQ driver (``amqp://`` and ``amqps://``), on aio-pika's robust connection.

URL: ``amqp://user:pass@host:port/vhost`` (``amqps://`` for TLS); query options
are aio-pika's (``heartbeat``, ``reconnect_interval``, TLS files, ...).

Topology. Topics are routing keys on one topic exchange, ``rabbitmq.exchange``
(default ``amq.topic``; any other name is declared as a durable topic exchange,
and ``amq.*`` names are only checked, since RabbitMQ reserves that prefix).
``publish`` sends to that exchange with the topic as routing key, with publisher
confirms. Each process owns ONE exclusive, auto-delete queue, bound once per
subscribed topic with the topic as binding key and read by one consumer: every
process has its own queue, so every process gets every message (fan-out).
The consumer acknowledges each message once handed to the hub, with a prefetch of
:data:`PREFETCH`, which bounds what this process holds in flight; replay to
browsers comes from the consumers' buffers, never from the queue.

Patterns. A topic may be an AMQP pattern: words are split on ``.``, ``*`` stands
for exactly one word and ``#`` for zero or more. RabbitMQ puts ONE copy of a
message in the queue however many bindings match it, so the driver matches the
routing key against every subscribed pattern itself (:func:`topic_matches`) and
calls each matching subscription once, with the actual routing key.

Limits. A routing key is an AMQP short string, at most 255 bytes of UTF-8; a
longer topic fails with :class:`BrokerError` before reaching the broker.

Recovery. The robust connection retries with exponential backoff and jitter,
from 0.25 s up to ``reconnect_interval`` seconds (default 5), and restores the
channels, the queue (re-declared under the same client-chosen name), its bindings
and the consumer before it reports the reconnect; only then is the broker "up"
again. Messages published while the connection was down are lost, as the
driver contract allows. Subscriptions end only when they are unsubscribed or the
driver is closed: ``on_error`` is never called.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustQueue,
    ExchangeType,
)
from aiormq.exceptions import (
    AMQPChannelError,
    AMQPConnectionError,
    AMQPError,
    ChannelInvalidStateError,
    InvalidFrameError,
)
from yarl import URL

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
from service.config import Settings
from service.log import get_logger, quiet_library_logs

log = get_logger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
"""Bound on :meth:`RabbitMQBroker.connect`, topology included."""
ATTEMPT_TIMEOUT = 5.0
"""Bound on one TCP + AMQP handshake, first connect and reconnects alike."""
OPERATION_TIMEOUT = 5.0
"""Bound on a bind, an unbind and a publisher confirm."""
CLOSE_TIMEOUT = 3.0
FIRST_RECONNECT_DELAY = 0.25
RECONNECT_INTERVAL = 5.0
"""Default longest pause between reconnect attempts (URL query ``reconnect_interval``)."""
PREFETCH = 256
"""Unacknowledged messages the broker may push to this process."""
MAX_ROUTING_KEY_BYTES = 255


def topic_matches(pattern: str, key: str) -> bool:
    """True if routing key ``key`` matches binding key ``pattern`` as RabbitMQ's
    topic exchange matches them: ``*`` is exactly one word, ``#`` zero or more.

    Runs in O(words(pattern) * words(key)), whatever the pattern: a client-chosen
    pattern cannot make it backtrack.
    """
    words = key.split(".") if key else []  # RabbitMQ: the empty key has no words
    # Every index into ``words`` the pattern matched so far can have reached.
    reached = {0}
    for part in pattern.split("."):
        if part == "#":
            reached = set(range(min(reached), len(words) + 1))
        else:
            reached = {i + 1 for i in reached if i < len(words) and part in ("*", words[i])}
        if not reached:
            return False
    return len(words) in reached


def is_pattern(topic: str) -> bool:
    """True if ``topic`` has a wildcard word (``a*`` is a plain word)."""
    return any(part in ("*", "#") for part in topic.split("."))


class _RobustConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection, pausing between reconnect attempts with
    exponential backoff and jitter (:class:`Backoff`) instead of a fixed interval.

    aio-pika reads ``reconnect_interval`` for each pause. Here it answers with the
    current backoff delay, which grows with every failed attempt (each one ends
    in the close callbacks) and starts over once reconnected; the URL's
    ``reconnect_interval`` caps it. Jitter keeps a fleet of instances from
    reconnecting in lock-step after a broker restart.
    """

    _backoff: Backoff
    _delay: float

    def __init__(self, url: URL, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)  # assigns reconnect_interval: see the setter
        self.close_callbacks.add(self._next_delay)
        self.reconnect_callbacks.add(self._first_delay)

    @property
    def reconnect_interval(self) -> float:
        return self._delay

    @reconnect_interval.setter
    def reconnect_interval(self, maximum: float) -> None:
        self._backoff = Backoff(initial=min(FIRST_RECONNECT_DELAY, maximum), maximum=maximum)
        self._delay = self._backoff.initial

    def _next_delay(self, *_: object) -> None:
        self._delay = self._backoff.next_delay()

    def _first_delay(self, *_: object) -> None:
        self._backoff.reset()
        self._delay = self._backoff.initial


class _Binding:
    """One binding key (topic or pattern) and the subscriptions sharing it."""

    __slots__ = ("bound", "key", "lock", "subscriptions", "wildcard")

    def __init__(self, key: str) -> None:
        self.key = key
        self.wildcard = is_pattern(key)
        self.subscriptions: list[_RabbitMQSubscription] = []
        self.bound = False
        # Serialises bind and unbind of this key, so an unsubscribe still in
        # flight cannot remove the binding a new subscribe relies on.
        self.lock = asyncio.Lock()


class _RabbitMQSubscription(CallbackSubscription):
    def __init__(
        self,
        broker: RabbitMQBroker,
        binding: _Binding,
        on_message: MessageCallback,
        on_error: ErrorCallback,
    ) -> None:
        super().__init__(binding.key, on_message, on_error)
        self.broker = broker
        self.binding = binding

    async def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            await self.broker._release(self)


class RabbitMQBroker(Broker):
    """One robust AMQP connection: a consuming channel and a publishing channel."""

    scheme = "amqp"

    def __init__(self, url: str, exchange: str = "amq.topic") -> None:
        super().__init__()
        parts = urlsplit(url)
        self.scheme = parts.scheme.lower()
        self._url = url
        self._secrets = {s for s in (parts.password, unquote(parts.password or "")) if s}
        self._exchange_name = exchange
        self._connection: _RobustConnection | None = None
        self._queue: AbstractRobustQueue | None = None
        self._exchange: AbstractExchange | None = None  # on the consuming channel
        self._publish_exchange: AbstractExchange | None = None
        self._bindings: dict[str, _Binding] = {}
        self._wildcards: dict[str, _Binding] = {}  # the pattern subset of _bindings
        # Keys unsubscribed while the connection was down: the robust queue still
        # restores them, so they are unbound once it is back.
        self._orphans: set[str] = set()
        self._started = False
        self._closing = False

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> RabbitMQBroker:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("amqp", "amqps"):
            raise ValueError(f"not an amqp:// or amqps:// URL: {redact_url(url)}")
        try:
            parts.port  # noqa: B018 - validates the port now, not at connect time
        except ValueError as exc:
            raise ValueError(f"invalid broker URL {redact_url(url)}: {exc}") from None
        return cls(url, settings.rabbitmq.exchange)

    def describe(self) -> str:
        return redact_url(self._url)

    # --- connection -----------------------------------------------------------------

    async def connect(self) -> None:
        if self._connection is not None:
            return
        self._closing = False
        # aio-pika and aiormq log a traceback per lost connection and retry.
        quiet_library_logs("aio_pika", "aiormq")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._open()
        except BaseException as exc:
            await self._shutdown()  # also when cancelled: stop aio-pika's reconnect task
            if not isinstance(exc, Exception):
                raise
            raise self._connect_error(exc) from exc
        self._started = True
        self._mark_up()

    def _connect_error(self, exc: Exception) -> BrokerError:
        if isinstance(exc, AMQPChannelError):
            # Connected, but the broker refused the topology (exchange type, ...).
            return BrokerError(self._scrub(f"{self.describe()}: {_text(exc)}"))
        detail = _text(exc)
        if isinstance(exc, InvalidFrameError):  # aiormq keeps no reply text here
            detail = f"the broker ended the handshake (unknown vhost, or no access?): {detail}"
        return BrokerUnavailable(self._scrub(f"cannot connect to {self.describe()}: {detail}"))

    async def _open(self) -> None:
        options: dict[str, Any] = {}
        if "reconnect_interval" not in URL(self._url).query:
            options["reconnect_interval"] = RECONNECT_INTERVAL
        connection = _RobustConnection(
            URL(self._url),
            client_properties={"connection_name": f"unifrost@{socket.gethostname()}"},
            **options,
        )
        self._connection = connection
        connection.close_callbacks.add(self._on_connection_closed)
        connection.reconnect_callbacks.add(self._on_reconnected)
        await connection.connect(timeout=ATTEMPT_TIMEOUT)

        # Consuming and publishing get a channel each: a channel error on one
        # (a refused publish, say) does not interrupt the other.
        channel: AbstractRobustChannel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=PREFETCH)
        self._exchange = await self._declare_exchange(channel)
        # Named here: the robust channel re-declares, re-binds and re-consumes it
        # under this name after a reconnect (aio-pika names even an unnamed robust
        # queue itself, so the server never picks one), and operators can tell
        # unifrost's queues apart.
        queue = await channel.declare_queue(
            f"unifrost.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
        )
        await queue.consume(self._on_delivery)
        self._queue = queue

        publishing: AbstractRobustChannel = await connection.channel(publisher_confirms=True)
        self._publish_exchange = await publishing.get_exchange(self._exchange_name, ensure=False)
        if not connection.connected.is_set():
            raise BrokerUnavailable("connection lost while connecting")

    async def _declare_exchange(self, channel: AbstractRobustChannel) -> AbstractExchange:
        name = self._exchange_name
        if name.startswith("amq."):
            # RabbitMQ refuses to declare "amq." exchanges; it predeclares amq.topic.
            return await channel.declare_exchange(name, ExchangeType.TOPIC, passive=True)
        return await channel.declare_exchange(name, ExchangeType.TOPIC, durable=True)

    async def close(self) -> None:
        self._closing = True
        self._up = False  # closed on purpose: nobody to tell
        for binding in self._bindings.values():
            for subscription in binding.subscriptions:
                subscription.active = False
            binding.subscriptions.clear()
        self._bindings.clear()
        self._wildcards.clear()
        self._orphans.clear()
        await self._shutdown()

    async def _shutdown(self) -> None:
        connection, self._connection = self._connection, None
        self._queue = self._exchange = self._publish_exchange = None
        if connection is None:
            return
        self._closing = True  # the close callback below is ours, not a loss
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await connection.close()
        except (TimeoutError, AMQPError, OSError, RuntimeError) as exc:
            log.warning("broker.error", broker=self.describe(), op="close", error=_text(exc))

    def _on_connection_closed(self, _sender: object, exc: BaseException | None) -> None:
        """aio-pika lost the connection (or failed a reconnect attempt)."""
        if self._closing or not self._started:
            return
        if self._up:
            self._mark_down(self._scrub(f"connection to {self.describe()} lost: {_text(exc)}"))
        else:
            self._report_error(self._scrub(f"reconnecting to {self.describe()}: {_text(exc)}"))

    async def _on_reconnected(self, _sender: object) -> None:
        """aio-pika reconnected and restored the queue, its bindings and the consumer."""
        if self._closing:
            return
        await self._drop_orphans()
        self._mark_up()

    async def _drop_orphans(self) -> None:
        queue, exchange = self._queue, self._exchange
        while self._orphans and queue is not None and exchange is not None:
            key = self._orphans.pop()
            binding = self._bindings.get(key)
            if binding is not None and binding.bound:
                continue
            try:
                await self._call(queue.unbind(exchange, key), f"unbinding {key!r}")
            except BrokerError as exc:
                log.warning("broker.error", topic=key, op="unbind", error=str(exc))

    # --- subscriptions --------------------------------------------------------------

    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> Subscription:
        self._check_topic(topic)
        if not self._up or self._queue is None:
            raise BrokerUnavailable(f"{self.describe()} is not connected")
        binding = self._bindings.get(topic)
        if binding is None:
            binding = self._bindings[topic] = _Binding(topic)
            if binding.wildcard:
                self._wildcards[topic] = binding
        subscription = _RabbitMQSubscription(self, binding, on_message, on_error)
        # Joined before binding: an unsubscribe waiting for the lock sees it and keeps the key.
        binding.subscriptions.append(subscription)
        try:
            async with binding.lock:
                if not binding.bound:
                    await self._bind(topic)
                    binding.bound = True
        except BaseException:
            subscription.active = False
            self._leave(subscription)
            raise
        return subscription

    async def _bind(self, key: str) -> None:
        queue, exchange = self._queue, self._exchange
        if queue is None or exchange is None:
            raise BrokerUnavailable(f"{self.describe()} is not connected")
        self._orphans.discard(key)
        await self._call(queue.bind(exchange, key), f"subscribing to {key!r}")

    def _leave(self, subscription: _RabbitMQSubscription) -> None:
        binding = subscription.binding
        if subscription in binding.subscriptions:
            binding.subscriptions.remove(subscription)
        if not binding.subscriptions and not binding.bound:
            self._forget(binding)

    def _forget(self, binding: _Binding) -> None:
        if self._bindings.get(binding.key) is binding:
            del self._bindings[binding.key]
            self._wildcards.pop(binding.key, None)

    async def _release(self, subscription: _RabbitMQSubscription) -> None:
        """Drop ``subscription``; the last one of its key unbinds the key."""
        binding = subscription.binding
        self._leave(subscription)
        if binding.subscriptions:
            return
        async with binding.lock:
            if binding.subscriptions or not binding.bound:
                return  # resubscribed meanwhile, or already unbound
            await self._unbind(binding.key)
            binding.bound = False
            if not binding.subscriptions:
                self._forget(binding)

    async def _unbind(self, key: str) -> None:
        """Unbind ``key``; never raises (unsubscribing must work without a broker)."""
        queue, exchange = self._queue, self._exchange
        if queue is None or exchange is None:
            return  # closed: the queue is gone
        if not self._up:
            self._orphans.add(key)
            return
        try:
            await self._call(queue.unbind(exchange, key), f"unbinding {key!r}")
        except BrokerError as exc:
            log.warning("broker.error", topic=key, op="unbind", error=str(exc))
            self._orphans.add(key)  # unbound after the next reconnect

    # --- messages -------------------------------------------------------------------

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        self._dispatch(message.routing_key or "", message.body)
        # A failed ack means the channel is gone, and its unacked messages with
        # the auto-delete queue: nothing would be redelivered.
        with contextlib.suppress(AMQPError, ChannelInvalidStateError, ConnectionError):
            await message.ack()

    def _dispatch(self, key: str, body: bytes) -> None:
        """Hand one message to every subscription whose key or pattern matches ``key``."""
        exact = self._bindings.get(key)
        if exact is not None and not exact.wildcard:
            self._deliver(exact, key, body)
        if self._wildcards:
            for binding in tuple(self._wildcards.values()):
                if topic_matches(binding.key, key):
                    self._deliver(binding, key, body)

    @staticmethod
    def _deliver(binding: _Binding, key: str, body: bytes) -> None:
        for subscription in tuple(binding.subscriptions):
            subscription.deliver(key, body)

    async def publish(self, topic: str, body: bytes) -> None:
        self._check_topic(topic)
        exchange = self._publish_exchange
        if not self._up or exchange is None:
            raise BrokerUnavailable(f"{self.describe()} is not connected")
        # Transient and not mandatory: live fan-out, where nobody listening is normal.
        message = aio_pika.Message(body)
        publishing = exchange.publish(
            message, routing_key=topic, mandatory=False, timeout=OPERATION_TIMEOUT
        )
        await self._call(publishing, f"publishing to {topic!r}")

    # --- helpers --------------------------------------------------------------------

    @staticmethod
    def _check_topic(topic: str) -> None:
        size = len(topic.encode("utf-8"))
        if size > MAX_ROUTING_KEY_BYTES:
            raise BrokerError(
                f"topic is {size} bytes of UTF-8; RabbitMQ routing keys are at most "
                f"{MAX_ROUTING_KEY_BYTES} bytes"
            )

    async def _call(self, operation: Awaitable[T], action: str) -> T:
        """Await one broker operation, bounded, with its failure as a BrokerError."""
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT):
                return await operation
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"{action}: no answer from {self.describe()} within {OPERATION_TIMEOUT:g}s"
            ) from exc
        except (AMQPConnectionError, ChannelInvalidStateError, ConnectionError) as exc:
            raise BrokerUnavailable(
                self._scrub(f"{action}: connection to {self.describe()} lost: {_text(exc)}")
            ) from exc
        except (AMQPError, ValueError, TypeError) as exc:
            raise BrokerError(self._scrub(f"{action}: refused by RabbitMQ: {_text(exc)}")) from exc

    def _scrub(self, text: str) -> str:
        """``text`` without the URL's password, wherever a library may have put it."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _text(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
