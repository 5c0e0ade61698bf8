"""The MQTT driver against real Mosquitto brokers.

Most tests use the machine's Mosquitto on 127.0.0.1:1883 (if it is not
reachable these tests fail). Tests that kill and restart the broker start their
own on a free port (``tests/brokers/mosquitto_server.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from service.brokers.base import Broker, BrokerUnavailable
from service.brokers.mqtt import MqttBroker, topic_problem
from service.config import Settings
from tests.brokers.contract import BrokerContract, Collector
from tests.brokers.local_server import free_port
from tests.brokers.mosquitto_server import SHARED_URL, mosquitto_server
from tests.brokers.streams import (
    assert_message,
    assert_outage_seen,
    assert_recovery_seen,
    error_code,
    open_stream,
    opened,
)
from tests.support import captured_logs, logged_events, metric, running_server


def mqtt(url: str = SHARED_URL) -> MqttBroker:
    return MqttBroker.from_url(url, Settings())


def topic(prefix: str = "unifrost/test") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def native() -> AsyncIterator[aiomqtt.Client]:
    """A plain aiomqtt client on the shared broker, as another application uses it."""
    async with aiomqtt.Client("127.0.0.1", 1883, timeout=5) as client:
        yield client


# --- the shared contract -------------------------------------------------------------------------


class TestMqttContract(BrokerContract):
    async def make_broker(self) -> Broker:
        return mqtt()

    def url_with_password(self, password: str) -> str:
        return f"mqtt://unifrost:{password}@127.0.0.1:1883"

    def broker_from_url(self, url: str) -> Broker:
        return mqtt(url)


# --- URLs and topics -----------------------------------------------------------------------------


def test_url_forms() -> None:
    plain = mqtt("mqtt://broker.example")
    assert (plain.host, plain.port, plain.tls, plain.username) == (
        "broker.example",
        1883,
        False,
        None,
    )
    secure = mqtt("mqtts://al%40ice:p%3Aw@broker.example")
    assert (secure.host, secure.port, secure.tls, secure.username) == (
        "broker.example",
        8883,
        True,
        "al@ice",
    )
    assert secure.describe() == "mqtts://***@broker.example"
    assert mqtt("mqtt://h:1884").describe() == "mqtt://h:1884"
    assert mqtt().client_id.startswith("unifrost-")
    assert mqtt().client_id != mqtt().client_id


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mqtt://u:hunter2@", "needs a host"),
        ("mqtt://u:hunter2@h:notaport", "invalid broker URL"),
        ("mqtt://u:hunter2@h/path", "no path or options"),
        ("mqtt://u:hunter2@h?qos=2", "no path or options"),
        ("amqp://u:hunter2@h", "not an mqtt://"),
    ],
)
def test_bad_urls_are_errors_without_credentials(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        mqtt(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "wildcards", "problem"),
    [
        ("", True, "must not be empty"),
        ("a/#/b", True, "'#' must be a whole level and the last one"),
        ("a/b#", True, "'#' must be a whole level"),
        ("a/b+", True, "'+' must be a whole level"),
        ("a/+x/c", True, "'+' must be a whole level"),
        ("a\x00b", True, "NUL"),
        ("a/+", False, "cannot publish to a topic with a wildcard"),
        ("a/#", False, "cannot publish to a topic with a wildcard"),
    ],
)
def test_invalid_topics_are_named(name: str, wildcards: bool, problem: str) -> None:
    assert problem in (topic_problem(name, wildcards) or "")


def test_valid_topics_pass() -> None:
    for name in ("a", "a/b/c", "café/naïve", "/a", "a//b", "+", "#", "a/+/c", "a/#", "has space"):
        assert topic_problem(name, wildcards=True) is None
    assert topic_problem("sensors/kitchen/temp", wildcards=False) is None


# --- connecting ----------------------------------------------------------------------------------


async def test_unreachable_broker_fails_connect_quickly() -> None:
    driver = mqtt(f"mqtt://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="cannot connect to the MQTT broker"):
        await driver.connect()
    assert time.monotonic() - started < 6
    assert driver.is_up is False
    await asyncio.wait_for(driver.close(), 2)


async def test_password_never_reaches_describe_or_logs() -> None:
    secret = uuid.uuid4().hex
    async with mosquitto_server() as server:
        url = f"mqtt://svc:{secret}@127.0.0.1:{server.port}"
        with captured_logs() as logs:
            driver = mqtt(url)
            async with running_server(driver=driver) as running:
                name = topic()
                stream = await open_stream(running, [name])
                await running.publish(name, "authenticated")
                assert_message(await stream.data_frame(), 1, name, "authenticated")
                assert driver.describe() == f"mqtt://***@127.0.0.1:{server.port}"
                metrics_text = (await running.api("GET", "/metrics")).text
                server.kill()
                assert error_code(await stream.data_frame()) == "broker-unavailable"
                await server.start()
                assert error_code(await stream.data_frame(timeout=10)) == "broker-recovered"
        unreachable = mqtt(f"mqtt://svc:{secret}@127.0.0.1:{free_port()}")
        with pytest.raises(BrokerUnavailable) as refused:
            await unreachable.connect()
        await unreachable.close()
    text = logs.getvalue()
    assert "broker.disconnected" in logged_events(text)
    for where in (text, metrics_text, str(refused.value), driver.describe()):
        assert secret not in where


# --- delivery through the service ----------------------------------------------------------------


async def test_natively_published_messages_arrive_exactly_and_in_order(
    native: aiomqtt.Client,
) -> None:
    async with running_server(driver=mqtt()) as running:
        name = topic()
        stream = await open_stream(running, [name])
        payloads = [
            "héllo wörld — ✓ 🚀 日本語",
            json.dumps({"user": "zoë", "items": [1, 2.5, None, True], "nested": {"k": "v"}}),
            *(f"message {i}" for i in range(20)),
        ]
        for payload in payloads:
            await native.publish(name, payload.encode(), qos=1)
        frames = await stream.messages(len(payloads))
        for event_id, (frame, payload) in enumerate(zip(frames, payloads, strict=True), 1):
            assert_message(frame, event_id, name, payload)
        assert json.loads(frames[1].payload)["user"] == "zoë"


async def test_natively_published_bytes_reach_the_driver_unchanged(
    native: aiomqtt.Client,
) -> None:
    driver = mqtt()
    await driver.connect()
    try:
        name = topic()
        got = Collector()
        await driver.subscribe(name, got.on_message, got.on_error)
        bodies = [bytes(range(256)), "ünïcødé ✓".encode(), b"", b'{"a": [1, 2]}']
        for body in bodies:
            await native.publish(name, body, qos=1)
        await got.wait_for(len(bodies))
        assert got.messages == [(name, body) for body in bodies]
    finally:
        await driver.close()


async def test_two_instances_each_deliver_every_message(native: aiomqtt.Client) -> None:
    async with (
        running_server(driver=mqtt()) as first,
        running_server(driver=mqtt()) as second,
    ):
        name = topic()
        first_stream = await open_stream(first, [name])
        second_stream = await open_stream(second, [name])
        for i in range(5):
            await native.publish(name, b"fan-out %d" % i, qos=1)
        for stream in (first_stream, second_stream):
            frames = await stream.messages(5)
            for i, frame in enumerate(frames):
                assert_message(frame, i + 1, name, f"fan-out {i}")


async def test_publish_api_on_one_instance_reaches_the_other() -> None:
    async with (
        running_server(driver=mqtt()) as publisher,
        running_server(driver=mqtt()) as reader,
    ):
        name = topic()
        stream = await open_stream(reader, [name])
        await publisher.publish(name, "across instances ✓")
        await publisher.publish(name, "second")
        assert_message(await stream.data_frame(), 1, name, "across instances ✓")
        assert_message(await stream.data_frame(), 2, name, "second")
        assert await metric(publisher, "unifrost_messages_received_total") == 0


async def test_wildcard_subscriptions_carry_the_actual_topic() -> None:
    async with running_server(driver=mqtt()) as running:
        base = topic("sensors")
        one_level = await open_stream(running, [f"{base}/+/temp"])
        the_rest = await open_stream(running, [f"{base}/#"])
        await running.publish(f"{base}/kitchen/temp", "21.5")
        await running.publish(f"{base}/kitchen/humidity", "40")
        await running.publish(f"{base}/hall/temp", "19")
        assert_message(await one_level.data_frame(), 1, f"{base}/kitchen/temp", "21.5")
        assert_message(await one_level.data_frame(), 2, f"{base}/hall/temp", "19")
        frames = await the_rest.messages(3)
        assert [(f.id, f.topic, f.payload) for f in frames] == [
            ("1", f"{base}/kitchen/temp", "21.5"),
            ("2", f"{base}/kitchen/humidity", "40"),
            ("3", f"{base}/hall/temp", "19"),
        ]
        # Overlapping filters on one connection: still exactly once per stream.
        await running.publish(f"{base}/attic/temp", "last")
        assert_message(await one_level.data_frame(), 3, f"{base}/attic/temp", "last")
        assert_message(await the_rest.data_frame(), 4, f"{base}/attic/temp", "last")
        assert await metric(running, "unifrost_broker_subscriptions") == 2


async def test_invalid_filters_are_subscription_failures_and_nothing_else_breaks() -> None:
    async with running_server(driver=mqtt()) as running:
        good = topic()
        consumer_id = await running.create_consumer([])
        stream = await running.stream(consumer_id)
        opened.append(stream)
        await stream.opening()
        bad = ["a/#/b", "a/b#", "a/b+", "x/+y"]
        response = await running.api(
            "POST", f"/consumers/{consumer_id}/subscriptions", {"add": [*bad, good], "remove": []}
        )
        assert response.status == 200, response.text
        result: Any = response.json()
        assert result["subscriptions"] == [good]
        assert [(e["topic"], e["code"]) for e in result["errors"]] == [
            (name, "subscription-failure") for name in bad
        ]
        messages = {e["topic"]: e["message"] for e in result["errors"]}
        assert messages["a/#/b"] == (
            "invalid MQTT topic 'a/#/b': '#' must be a whole level and the last one"
        )
        assert messages["a/b+"] == "invalid MQTT topic 'a/b+': '+' must be a whole level"
        response = await running.api("POST", "/publish?topic=a/%2B/c", "x")
        assert response.status == 502
        assert "wildcard" in response.json()["error"]["message"]
        await running.publish(good, "still fine")
        assert_message(await stream.data_frame(), 1, good, "still fine")
        assert running.broker.is_up is True
        assert await metric(running, "unifrost_broker_subscriptions") == 1


# --- trouble -------------------------------------------------------------------------------------


async def test_broker_restart_is_survived_on_the_same_stream() -> None:
    async with mosquitto_server() as server, running_server(driver=mqtt(server.url)) as running:
        name = topic()
        stream = await open_stream(running, [name, f"{name}/+"])
        await running.publish(name, "before")
        assert_message(await stream.data_frame(), 1, name, "before")

        server.kill()
        await assert_outage_seen(running, stream, name)

        await server.start()
        await assert_recovery_seen(running, stream)
        # Every filter was subscribed again.
        await running.publish(name, "after")
        await running.publish(f"{name}/child", "wildcard after")
        assert_message(await stream.data_frame(), 2, name, "after")
        assert_message(await stream.data_frame(), 3, f"{name}/child", "wildcard after")


async def test_close_does_not_hang_while_the_broker_is_gone() -> None:
    async with mosquitto_server() as server:
        driver = mqtt(server.url)
        await driver.connect()
        got = Collector()
        await driver.subscribe(topic(), got.on_message, got.on_error)
        server.kill()
        deadline = time.monotonic() + 5
        while driver.is_up:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(driver.publish(topic(), b"x"), 1)
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(driver.subscribe(topic(), got.on_message, got.on_error), 1)
        started = time.monotonic()
        await driver.close()
        await driver.close()
        assert time.monotonic() - started < 2
