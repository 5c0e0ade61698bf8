"""The in-process broker: the default driver and the test double.

``memory://`` gives each driver a private bus; ``memory://<name>`` shares one
bus between every driver in the process that names it, which is how tests run
two service instances against "the same broker". Topics match exactly.

Delivery is synchronous inside :meth:`MemoryBroker.publish`: nothing is queued,
so nothing can be lost or reordered between publish and fan-out.
"""

from __future__ import annotations

from service.brokers.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    CallbackSubscription,
    ErrorCallback,
    MessageCallback,
    Subscription,
)
from service.config import Settings


class _Bus:
    def __init__(self) -> None:
        self.subscribers: dict[str, list[_MemorySubscription]] = {}


_NAMED_BUSES: dict[str, _Bus] = {}


class _MemorySubscription(CallbackSubscription):
    def __init__(
        self, bus: _Bus, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> None:
        super().__init__(topic, on_message, on_error)
        self.bus = bus

    async def unsubscribe(self) -> None:
        self.detach()

    def detach(self) -> None:
        if not self.active:
            return
        self.active = False
        subs = self.bus.subscribers.get(self.topic, [])
        if self in subs:
            subs.remove(self)
        if not subs:
            self.bus.subscribers.pop(self.topic, None)


class MemoryBroker(Broker):
    """In-process pub/sub with hooks to simulate failures in tests."""

    scheme = "memory"

    def __init__(self, name: str = "") -> None:
        super().__init__()
        self.name = name
        self._bus = _NAMED_BUSES.setdefault(name, _Bus()) if name else _Bus()
        self._subs: list[_MemorySubscription] = []
        #: Topics whose subscribe() fails, to exercise subscription errors.
        self.rejected_topics: set[str] = set()

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> MemoryBroker:
        # Credentials mean nothing here; dropping them keeps them out of describe().
        return cls(url.split("://", 1)[1].strip("/").rpartition("@")[2])

    async def connect(self) -> None:
        self._mark_up()

    async def close(self) -> None:
        for sub in self._subs:
            sub.detach()
        self._subs.clear()
        self._up = False  # closed on purpose: nobody to tell

    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> Subscription:
        if not self._up:
            raise BrokerUnavailable("memory broker is not connected")
        if topic in self.rejected_topics:
            raise BrokerError(f"subscription to {topic!r} refused")
        sub = _MemorySubscription(self._bus, topic, on_message, on_error)
        self._bus.subscribers.setdefault(topic, []).append(sub)
        self._subs.append(sub)
        return sub

    async def publish(self, topic: str, body: bytes) -> None:
        self._deliver(topic, body)

    def publish_now(self, topic: str, body: bytes) -> bool:
        self._deliver(topic, body)
        return True

    def _deliver(self, topic: str, body: bytes) -> None:
        if not self._up:
            raise BrokerUnavailable("memory broker is not connected")
        # Copy: a callback may unsubscribe while we iterate.
        for sub in tuple(self._bus.subscribers.get(topic, ())):
            sub.deliver(topic, body)

    def describe(self) -> str:
        return f"memory://{self.name}"

    # --- failure simulation (tests and drills) --------------------------------

    def fail_subscription(self, topic: str, message: str) -> None:
        """Kill this driver's subscriptions to ``topic`` as a broker error would."""
        for sub in [s for s in self._subs if s.topic == topic and s.active]:
            sub.detach()
            sub.on_error(message)

    def go_down(self, reason: str = "connection lost") -> None:
        self._mark_down(reason)

    def come_back(self) -> None:
        self._mark_up()

    def drop_messages(self, topic: str, count: int, reason: str = "slow consumer") -> None:
        """Report lost messages as a driver with a bounded client buffer would."""
        self._report_dropped(topic, count, reason)
