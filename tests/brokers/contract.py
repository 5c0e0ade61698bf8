"""The broker driver contract, run against every driver.

``service/brokers/base.py`` states what every driver guarantees; this module
checks it. A driver's test module subclasses :class:`BrokerContract`,
implements :meth:`BrokerContract.make_broker` (and, for drivers whose
subscriptions take a moment to become effective, :meth:`BrokerContract.settle`)
and names the subclass ``Test<Driver>`` so pytest collects it::

    class TestKafkaBroker(BrokerContract):
        async def make_broker(self) -> Broker:
            return KafkaBroker(KAFKA_URL)

        def url_with_password(self, password: str) -> str:
            return f"kafka://user:{password}@{KAFKA_HOST}"

Each call of ``make_broker`` stands for one more service instance: a fresh,
not yet connected driver pointing at the same broker as the others. The tests
wait for deliveries by bounded polling, never by fixed sleeps; the only pause is
the short grace used to show that something does *not* arrive, taken after a
witness subscription has already received the same message.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from service.brokers import open_broker
from service.brokers.base import Broker, BrokerError, Subscription

DELIVERY_TIMEOUT = 5.0
"""Upper bound for any expected delivery; a passing test never waits this long."""


class Collector:
    """An ``on_message``/``on_error`` pair that records what it receives.

    Also records the thread and event loop every callback ran on, and can be
    told to raise after recording, to play a misbehaving subscriber.
    """

    def __init__(self, raises: bool = False) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.errors: list[str] = []
        self.threads: set[int] = set()
        self.loops: set[int] = set()
        self.raises = raises
        self._changed = asyncio.Event()

    @property
    def bodies(self) -> list[bytes]:
        return [body for _, body in self.messages]

    def on_message(self, topic: str, body: bytes) -> None:
        self._record_context()
        self.messages.append((topic, body))
        self._changed.set()
        if self.raises:
            raise RuntimeError(f"subscriber failure on message {len(self.messages)}")

    def on_error(self, message: str) -> None:
        self._record_context()
        self.errors.append(message)
        self._changed.set()

    def _record_context(self) -> None:
        self.threads.add(threading.get_ident())
        try:
            self.loops.add(id(asyncio.get_running_loop()))
        except RuntimeError:  # called outside any running loop
            self.loops.add(0)

    async def wait_for(
        self, count: int, timeout: float = DELIVERY_TIMEOUT
    ) -> list[tuple[str, bytes]]:
        """Wait until at least ``count`` messages arrived; returns all of them.

        Raises:
            AssertionError: fewer than ``count`` arrived within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            # Callbacks run on this loop, so nothing lands between clear() and the check.
            self._changed.clear()
            if len(self.messages) >= count:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"expected {count} messages within {timeout}s, got {len(self.messages)}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
        return list(self.messages)


class BrokerContract(abc.ABC):
    """The shared test set; subclass it as ``Test<Driver>`` per driver."""

    #: How long "nothing more arrives" is watched for, after a witness
    #: subscription has already received the message in question.
    absence_grace: float = 0.1
    #: Messages in the ordering test.
    order_count: int = 50
    #: Body size in the large-body test.
    large_body_size: int = 256 * 1024

    # --- hooks for each driver ------------------------------------------------------

    @abc.abstractmethod
    async def make_broker(self) -> Broker:
        """A fresh, not yet connected driver pointing at the shared test broker."""

    @abc.abstractmethod
    def url_with_password(self, password: str) -> str:
        """A URL for this driver's scheme carrying ``password`` as its credential."""

    def broker_from_url(self, url: str) -> Broker:
        """Build a driver from a URL the way the server does."""
        return open_broker(url)

    async def settle(self) -> None:
        """Wait until fresh subscriptions are effective.

        A no-op by default: ``subscribe`` is documented to return once delivery
        is guaranteed. Override it for brokers where that takes a moment more.
        """
        return

    def topic(self) -> str:
        """A unique topic name, valid for every supported broker."""
        return f"contract-{uuid.uuid4().hex[:16]}"

    # --- helpers ------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    async def _close_drivers(self) -> AsyncIterator[None]:
        self._drivers: list[Broker] = []
        yield
        for driver in self._drivers:
            await asyncio.wait_for(driver.close(), DELIVERY_TIMEOUT)

    async def connected(self) -> Broker:
        """One more connected driver ("service instance"), closed after the test."""
        driver = await self.make_broker()
        self._drivers.append(driver)
        await asyncio.wait_for(driver.connect(), DELIVERY_TIMEOUT)
        return driver

    async def subscribe(self, driver: Broker, topic: str, collector: Collector) -> Subscription:
        return await asyncio.wait_for(
            driver.subscribe(topic, collector.on_message, collector.on_error), DELIVERY_TIMEOUT
        )

    async def publish(self, driver: Broker, topic: str, body: bytes) -> None:
        await asyncio.wait_for(driver.publish(topic, body), DELIVERY_TIMEOUT)

    async def grace(self) -> None:
        """Let anything that should not arrive have its chance to (see ``absence_grace``)."""
        await asyncio.sleep(self.absence_grace)

    # --- connection lifecycle --------------------------------------------------------------

    async def test_connect_is_up_and_close_are_idempotent(self) -> None:
        driver = await self.make_broker()
        self._drivers.append(driver)
        assert driver.is_up is False
        await driver.connect()
        assert driver.is_up is True
        await driver.close()
        assert driver.is_up is False
        await driver.close()
        assert driver.is_up is False

    async def test_close_releases_subscriptions(self) -> None:
        driver, witness = await self.connected(), await self.connected()
        topic = self.topic()
        gone, seen = Collector(), Collector()
        await self.subscribe(driver, topic, gone)
        await self.subscribe(witness, topic, seen)
        await self.settle()
        await driver.close()
        await self.publish(witness, topic, b"after close")
        await seen.wait_for(1)
        await self.grace()
        assert gone.messages == []

    # --- delivery ------------------------------------------------------------------------------

    async def test_subscribe_then_publish_delivers_body_and_topic(self) -> None:
        driver = await self.connected()
        topic = self.topic()
        got = Collector()
        await self.subscribe(driver, topic, got)
        await self.settle()
        await self.publish(driver, topic, b"hello, world")
        assert await got.wait_for(1) == [(topic, b"hello, world")]
        await self.grace()
        assert got.messages == [(topic, b"hello, world")]
        assert got.errors == []

    async def test_every_message_arrives_in_publish_order(self) -> None:
        subscriber, publisher = await self.connected(), await self.connected()
        topic = self.topic()
        got = Collector()
        await self.subscribe(subscriber, topic, got)
        await self.settle()
        expected = [f"message {i}".encode() for i in range(self.order_count)]
        for body in expected:
            await self.publish(publisher, topic, body)
        await got.wait_for(self.order_count)
        await self.grace()
        assert got.bodies == expected
        assert {t for t, _ in got.messages} == {topic}

    async def test_fan_out_to_every_instance(self) -> None:
        first, second, publisher = (
            await self.connected(),
            await self.connected(),
            await self.connected(),
        )
        topic = self.topic()
        got_first, got_second = Collector(), Collector()
        await self.subscribe(first, topic, got_first)
        await self.subscribe(second, topic, got_second)
        await self.settle()
        expected = [f"fan-out {i}".encode() for i in range(10)]
        for body in expected:
            await self.publish(publisher, topic, body)
        await got_first.wait_for(len(expected))
        await got_second.wait_for(len(expected))
        await self.grace()
        # Both instances get every message: no competing-consumer split.
        assert got_first.bodies == expected
        assert got_second.bodies == expected

    async def test_topics_are_isolated(self) -> None:
        driver, publisher = await self.connected(), await self.connected()
        topic_a, topic_b = self.topic(), self.topic()
        got_a, got_b = Collector(), Collector()
        await self.subscribe(driver, topic_a, got_a)
        await self.subscribe(driver, topic_b, got_b)
        await self.settle()
        await self.publish(publisher, topic_a, b"for a")
        await self.publish(publisher, topic_b, b"for b 1")
        await self.publish(publisher, topic_b, b"for b 2")
        await got_a.wait_for(1)
        await got_b.wait_for(2)
        await self.grace()
        assert got_a.messages == [(topic_a, b"for a")]
        assert got_b.messages == [(topic_b, b"for b 1"), (topic_b, b"for b 2")]

    async def test_unsubscribe_stops_delivery_and_is_idempotent(self) -> None:
        driver, witness = await self.connected(), await self.connected()
        topic = self.topic()
        got, seen = Collector(), Collector()
        subscription = await self.subscribe(driver, topic, got)
        await self.subscribe(witness, topic, seen)
        await self.settle()
        await self.publish(witness, topic, b"before")
        await got.wait_for(1)
        await asyncio.wait_for(subscription.unsubscribe(), DELIVERY_TIMEOUT)
        await asyncio.wait_for(subscription.unsubscribe(), DELIVERY_TIMEOUT)
        await self.publish(witness, topic, b"after")
        assert [b for _, b in await seen.wait_for(2)] == [b"before", b"after"]
        await self.grace()
        assert got.messages == [(topic, b"before")]
        assert got.errors == []
        # The driver still works after the unsubscribe.
        again = Collector()
        await self.subscribe(driver, topic, again)
        await self.settle()
        await self.publish(witness, topic, b"resubscribed")
        assert await again.wait_for(1) == [(topic, b"resubscribed")]

    async def test_binary_and_empty_bodies_pass_unchanged(self) -> None:
        driver, publisher = await self.connected(), await self.connected()
        topic = self.topic()
        got = Collector()
        await self.subscribe(driver, topic, got)
        await self.settle()
        bodies = [bytes(range(256)), b"", b"\x00", b"\xff\xfe invalid utf-8 \xc3\x28", b"\r\n\n"]
        for body in bodies:
            await self.publish(publisher, topic, body)
        await got.wait_for(len(bodies))
        await self.grace()
        assert got.bodies == bodies
        assert all(type(body) is bytes for body in got.bodies)

    async def test_large_body_passes_unchanged(self) -> None:
        driver, publisher = await self.connected(), await self.connected()
        topic = self.topic()
        got = Collector()
        await self.subscribe(driver, topic, got)
        await self.settle()
        body = bytes(i % 251 for i in range(self.large_body_size))
        await self.publish(publisher, topic, body)
        ((received_topic, received),) = await got.wait_for(1)
        assert received_topic == topic
        assert len(received) == self.large_body_size
        assert received == body

    # --- callbacks ----------------------------------------------------------------------------

    async def test_callbacks_run_on_the_event_loop_thread(self) -> None:
        driver, publisher = await self.connected(), await self.connected()
        topic = self.topic()
        got = Collector()
        await self.subscribe(driver, topic, got)
        await self.settle()
        for i in range(5):
            await self.publish(publisher, topic, b"%d" % i)
        await got.wait_for(5)
        assert got.threads == {threading.get_ident()}
        assert got.loops == {id(asyncio.get_running_loop())}

    async def test_raising_callback_does_not_stop_delivery(self) -> None:
        driver, other_driver, publisher = (
            await self.connected(),
            await self.connected(),
            await self.connected(),
        )
        topic, other_topic = self.topic(), self.topic()
        bad, same_topic, other = Collector(raises=True), Collector(), Collector()
        await self.subscribe(driver, topic, bad)
        await self.subscribe(driver, other_topic, other)
        await self.subscribe(other_driver, topic, same_topic)
        await self.settle()
        for i in range(3):
            await self.publish(publisher, topic, b"t%d" % i)
            await self.publish(publisher, other_topic, b"o%d" % i)
        await bad.wait_for(3)
        await other.wait_for(3)
        await same_topic.wait_for(3)
        await self.grace()
        # Each raise is caught by the driver; later messages still arrive.
        assert bad.bodies == [b"t0", b"t1", b"t2"]
        assert bad.errors == []
        assert other.bodies == [b"o0", b"o1", b"o2"]
        assert same_topic.bodies == [b"t0", b"t1", b"t2"]
        assert driver.is_up is True

    # --- failures --------------------------------------------------------------------------------

    async def test_publish_on_closed_driver_raises(self) -> None:
        driver = await self.connected()
        await driver.close()
        started = time.monotonic()
        with pytest.raises(BrokerError):
            await asyncio.wait_for(driver.publish(self.topic(), b"lost"), DELIVERY_TIMEOUT)
        assert time.monotonic() - started < DELIVERY_TIMEOUT / 2

    async def test_subscribe_on_closed_driver_raises(self) -> None:
        driver = await self.connected()
        await driver.close()
        got = Collector()
        with pytest.raises(BrokerError):
            await asyncio.wait_for(
                driver.subscribe(self.topic(), got.on_message, got.on_error), DELIVERY_TIMEOUT
            )

    async def test_describe_hides_the_password(self) -> None:
        password = f"s3cret-{uuid.uuid4().hex}"
        url = self.url_with_password(password)
        assert password in url
        driver = self.broker_from_url(url)
        self._drivers.append(driver)
        description = driver.describe()
        assert password not in description
        assert description.startswith(f"{driver.scheme}://")
        plain = await self.make_broker()
        self._drivers.append(plain)
        assert plain.describe().startswith(f"{plain.scheme}://")
