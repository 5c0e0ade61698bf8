"""The broker driver interface and the semantics every driver must keep.

A driver connects one process to one broker. The topic hub
(:mod:`service.consumers.hub`) holds at most one driver subscription per topic
and fans each message out to its consumers, so a driver never sees consumers.

Semantics every driver guarantees (checked by ``tests/brokers/contract.py``
against the real server):

* **Fan-out, not competing consumers.** A subscription receives every message
  published to its topic after :meth:`Broker.subscribe` returned, on every
  process that subscribed: two processes (or two drivers) subscribed to the same
  topic both receive each message. No consumer group, shared queue or durable
  cursor is shared between processes.
* **Order.** Messages published by one publisher to one topic (one Kafka
  partition) arrive in publish order.
* **At most once, live.** Messages published before ``subscribe`` returned, or
  while the broker was unreachable, may be missed; replay to browsers comes from
  each consumer's buffer, not from the broker.
* **Callbacks run on the event loop** that called :meth:`Broker.connect`, never
  from another thread, and must not be awaited: ``on_message`` is a plain
  function and returns quickly. The driver catches and logs anything it raises.
* **Isolation.** A failure of one subscription is reported through its
  ``on_error`` and never affects other topics or raises out of the driver's
  reader task.
* **Status.** The driver reports connection loss and recovery through the
  :class:`BrokerListener`; after recovery existing subscriptions resume without
  the caller re-subscribing.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit, urlunsplit

from service.log import get_logger

if TYPE_CHECKING:
    from service.config import Settings

log = get_logger("unifrost.broker")

MessageCallback = Callable[[str, bytes], None]
"""``on_message(topic, body)``: ``topic`` is the message's actual topic, which
differs from the subscribed name when that name is a wildcard pattern."""

ErrorCallback = Callable[[str], None]
"""``on_error(message)``: the subscription has failed and delivers no more."""


class BrokerError(Exception):
    """A broker operation failed; the message is safe to show to clients."""


class BrokerUnavailable(BrokerError):
    """The broker is not reachable right now."""


class BrokerListener(Protocol):
    """Hears what a driver reports (the topic hub, in the service)."""

    def broker_down(self, reason: str) -> None:
        """The connection was lost; the driver is reconnecting."""

    def broker_up(self, reconnected: bool) -> None:
        """Connected; ``reconnected`` after a loss, every subscription restored."""

    def broker_error(self, message: str) -> None:
        """A failure that ends no subscription (a failed reconnect attempt, ...)."""

    def messages_dropped(self, topic: str, count: int, reason: str) -> None:
        """The driver lost ``count`` messages of subscription ``topic``."""


class Subscription(abc.ABC):
    """A live subscription to one topic (or pattern)."""

    @abc.abstractmethod
    async def unsubscribe(self) -> None:
        """Stop delivery. Idempotent; never raises for a lost connection."""


class CallbackSubscription(Subscription):
    """A subscription holding the hub's callbacks; drivers extend it with their state."""

    def __init__(self, topic: str, on_message: MessageCallback, on_error: ErrorCallback) -> None:
        self.topic = topic
        self.on_message = on_message
        self.on_error = on_error
        #: False once unsubscribed (or failed): deliver nothing more.
        self.active = True

    def deliver(self, topic: str, body: bytes) -> None:
        """Hand one message to the hub, unless unsubscribed; never raises."""
        if not self.active:  # unsubscribed by an earlier callback of the same batch
            return
        try:
            self.on_message(topic, body)
        except Exception:  # one bad subscriber must not starve the others
            log.exception("broker.error", topic=self.topic, error="message callback failed")


class Broker(abc.ABC):
    """One connection to one broker, shared by every topic of the process."""

    #: Scheme this driver serves, e.g. ``"memory"`` or ``"kafka"``.
    scheme: str = ""

    def __init__(self) -> None:
        self._listener: BrokerListener | None = None
        self._up = False
        self._was_up = False

    def set_listener(self, listener: BrokerListener) -> None:
        """Register who hears about connection loss and recovery."""
        self._listener = listener

    @property
    def is_up(self) -> bool:
        """True while the broker is reachable (drives ``/readyz``)."""
        return self._up

    # --- for drivers: report state changes exactly once per transition -----------

    def _mark_up(self) -> None:
        if self._up:
            return
        self._up = True
        reconnected, self._was_up = self._was_up, True
        if self._listener:
            self._listener.broker_up(reconnected=reconnected)

    def _mark_down(self, reason: str) -> None:
        if not self._up:
            return
        self._up = False
        if self._listener:
            self._listener.broker_down(reason)

    def _report_error(self, message: str) -> None:
        if self._listener:
            self._listener.broker_error(message)

    def _report_dropped(self, topic: str, count: int, reason: str) -> None:
        if self._listener:
            self._listener.messages_dropped(topic, count, reason)

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> Broker:
        """Build a driver from its URL and the service settings (broker options)."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a URL")

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection.

        Raises:
            BrokerUnavailable: the broker could not be reached.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every subscription and the connection. Idempotent."""

    @abc.abstractmethod
    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> Subscription:
        """Start receiving ``topic``; returns once delivery is guaranteed.

        Raises:
            BrokerError: the subscription could not be made (bad topic,
                permissions, broker down).
        """

    @abc.abstractmethod
    async def publish(self, topic: str, body: bytes) -> None:
        """Publish ``body`` to ``topic``.

        Raises:
            BrokerUnavailable: the broker is not reachable.
            BrokerError: the broker refused the message.
        """

    def publish_now(self, topic: str, body: bytes) -> bool:
        """Publish without suspending, when the driver can (an in-process broker).

        Returns False, having done nothing, when the caller must await
        :meth:`publish` instead. Raises what :meth:`publish` raises.
        """
        return False

    def describe(self) -> str:
        """The broker URL with credentials removed, safe for logs."""
        return f"{self.scheme}://"


def redact_url(url: str) -> str:
    """``url`` with any user and password replaced by ``***`` (for logs and errors)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))
