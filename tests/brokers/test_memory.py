"""The in-process driver: the shared contract plus its test-only hooks."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service.brokers import MemoryBroker, open_broker
from service.brokers.base import Broker, BrokerError, BrokerUnavailable
from tests.brokers.contract import BrokerContract, Collector


class TestMemoryBroker(BrokerContract):
    """Every driver made in one test shares the named bus ``contract-<uuid>``."""

    bus: str

    @pytest.fixture(autouse=True)
    def _bus_name(self) -> None:
        self.bus = f"contract-{uuid.uuid4().hex}"

    async def make_broker(self) -> Broker:
        return MemoryBroker(self.bus)

    def url_with_password(self, password: str) -> str:
        return f"memory://user:{password}@{self.bus}"


class Listener:
    """Records the status calls a driver makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def broker_down(self, reason: str) -> None:
        self.calls.append(("down", reason))

    def broker_up(self, reconnected: bool) -> None:
        self.calls.append(("up", reconnected))


def bus_name() -> str:
    return f"memory-test-{uuid.uuid4().hex}"


async def test_unnamed_drivers_have_private_buses() -> None:
    first, second = open_broker("memory://"), open_broker("memory://")
    await first.connect()
    await second.connect()
    got_first, got_second = Collector(), Collector()
    await first.subscribe("news", got_first.on_message, got_first.on_error)
    await second.subscribe("news", got_second.on_message, got_second.on_error)
    await second.publish("news", b"second only")
    await first.publish("news", b"first only")
    assert got_first.messages == [("news", b"first only")]
    assert got_second.messages == [("news", b"second only")]
    await first.close()
    await second.close()


async def test_open_broker_builds_a_named_memory_driver() -> None:
    name = bus_name()
    driver = open_broker(f"memory://{name}")
    assert isinstance(driver, MemoryBroker)
    assert driver.scheme == "memory"
    assert driver.name == name
    assert driver.describe() == f"memory://{name}"
    # The URL form and the constructor form share one bus.
    peer = MemoryBroker(name)
    await driver.connect()
    await peer.connect()
    got = Collector()
    await driver.subscribe("t", got.on_message, got.on_error)
    await peer.publish("t", b"across")
    assert got.messages == [("t", b"across")]
    await driver.close()
    await peer.close()


@pytest.mark.parametrize("url", ["carrier-pigeon://coop", "ftp://host/x", "not a url"])
def test_unsupported_scheme_raises_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported broker scheme"):
        open_broker(url)


async def test_rejected_topic_fails_subscribe_only_for_that_topic() -> None:
    driver = MemoryBroker(bus_name())
    await driver.connect()
    driver.rejected_topics.add("forbidden")
    got = Collector()
    with pytest.raises(BrokerError, match="forbidden") as raised:
        await driver.subscribe("forbidden", got.on_message, got.on_error)
    assert not isinstance(raised.value, BrokerUnavailable)
    await driver.subscribe("allowed", got.on_message, got.on_error)
    await driver.publish("forbidden", b"nobody listens")
    await driver.publish("allowed", b"ok")
    assert got.messages == [("allowed", b"ok")]
    assert driver.is_up is True
    await driver.close()


async def test_fail_subscription_reports_error_and_stops_only_that_topic() -> None:
    name = bus_name()
    driver, other_instance = MemoryBroker(name), MemoryBroker(name)
    await driver.connect()
    await other_instance.connect()
    failed, kept, elsewhere = Collector(), Collector(), Collector()
    await driver.subscribe("t1", failed.on_message, failed.on_error)
    await driver.subscribe("t2", kept.on_message, kept.on_error)
    await other_instance.subscribe("t1", elsewhere.on_message, elsewhere.on_error)
    driver.fail_subscription("t1", "boom")
    assert failed.errors == ["boom"]
    await driver.publish("t1", b"after failure")
    await driver.publish("t2", b"still flowing")
    assert failed.messages == []
    assert kept.messages == [("t2", b"still flowing")]
    assert kept.errors == []
    # Only this driver's subscription failed; the other instance keeps its own.
    assert elsewhere.messages == [("t1", b"after failure")]
    assert elsewhere.errors == []
    # Failing again does not report twice.
    driver.fail_subscription("t1", "boom again")
    assert failed.errors == ["boom"]
    await driver.close()
    await other_instance.close()


async def test_go_down_and_come_back_notify_the_listener() -> None:
    driver = MemoryBroker(bus_name())
    listener = Listener()
    driver.set_listener(listener)
    await driver.connect()
    assert listener.calls == [("up", False)]
    got = Collector()
    await driver.subscribe("t", got.on_message, got.on_error)

    driver.go_down("network partition")
    assert driver.is_up is False
    assert listener.calls == [("up", False), ("down", "network partition")]
    with pytest.raises(BrokerUnavailable):
        await driver.publish("t", b"while down")
    with pytest.raises(BrokerUnavailable):
        await driver.subscribe("u", got.on_message, got.on_error)

    driver.come_back()
    assert driver.is_up is True
    assert listener.calls == [("up", False), ("down", "network partition"), ("up", True)]
    # Existing subscriptions resume without re-subscribing.
    await driver.publish("t", b"after recovery")
    assert got.messages == [("t", b"after recovery")]
    assert got.errors == []
    await driver.close()


async def test_go_down_default_reason() -> None:
    driver = MemoryBroker()
    listener = Listener()
    driver.set_listener(listener)
    await driver.connect()
    driver.go_down()
    assert listener.calls == [("up", False), ("down", "connection lost")]
    await driver.close()


async def test_delivery_is_done_when_publish_returns() -> None:
    driver = MemoryBroker()
    await driver.connect()
    got = Collector()
    await driver.subscribe("t", got.on_message, got.on_error)
    publish = asyncio.ensure_future(driver.publish("t", b"now"))
    assert got.messages == []
    await publish
    assert got.messages == [("t", b"now")]
    await driver.close()
