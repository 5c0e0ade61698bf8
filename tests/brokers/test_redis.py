"""The Redis pub/sub driver (and the URL options of both Redis drivers) against
real redis-server processes.

Most tests use the shared server on 127.0.0.1:6379 (if it is not reachable
these tests fail). Tests that kill, freeze, restart or configure a server start
their own on a free port (``tests/brokers/redis_server.py``). The streams mode
is tested in ``test_redis_streams.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from redis.asyncio import Redis

from service.brokers.base import Broker, BrokerUnavailable
from service.brokers.redis_config import is_pattern, parse_url
from service.brokers.redis_pubsub import RedisBroker
from service.brokers.redis_streams import RedisStreamsBroker
from service.config import Settings
from tests.brokers.contract import BrokerContract, Collector
from tests.brokers.redis_server import SHARED_URL, free_port, redis_server
from tests.brokers.streams import (
    assert_message,
    assert_outage_seen,
    assert_recovery_seen,
    error_code,
    open_stream,
    opened,
)
from tests.support import captured_logs, logged_events, metric, running_server


def driver_for(url: str) -> Broker:
    return RedisBroker.from_url(url, Settings())


def channel(prefix: str = "unifrost.test") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def native() -> AsyncIterator[Redis]:
    """A plain redis-py client on the shared server, as another application uses it."""
    client = Redis.from_url(SHARED_URL, socket_connect_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


# --- the shared contract -------------------------------------------------------------------------


class TestRedisContract(BrokerContract):
    async def make_broker(self) -> Broker:
        return driver_for(SHARED_URL)

    def broker_from_url(self, url: str) -> Broker:
        return driver_for(url)

    def url_with_password(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:6379/0"


# --- URLs -----------------------------------------------------------------------------------------


def test_url_forms_parse_to_address_credentials_and_options() -> None:
    plain = parse_url("redis://127.0.0.1")
    assert (plain.host, plain.port, plain.db, plain.username, plain.password, plain.tls) == (
        "127.0.0.1",
        6379,
        0,
        None,
        None,
        False,
    )
    full = parse_url(
        "rediss://al%40ice:p%40ss%3Aw@cache.example:6380/3"
        "?connect_timeout=2&timeout=1.5&max_reconnect_wait=0.5&health_check_interval=0.25"
    )
    assert (full.host, full.port, full.db, full.username, full.password, full.tls) == (
        "cache.example",
        6380,
        3,
        "al@ice",
        "p@ss:w",
        True,
    )
    assert (full.connect_timeout, full.timeout, full.max_reconnect_wait) == (2.0, 1.5, 0.5)
    assert full.health_check_interval == 0.25
    assert (plain.health_check_interval, plain.streams) == (10.0, False)
    assert parse_url("redis://:hunter2@h:1/2").password == "hunter2"
    assert parse_url("redis://:hunter2@h:1/2").username is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://:hunter2@", "needs a host"),
        ("redis://:hunter2@h:notaport", "bad port"),
        ("redis://:hunter2@h/db1", "database number"),
        ("redis://:hunter2@h?stream=1", "unknown Redis URL option 'stream'"),
        ("redis://:hunter2@h?timeout=0", "option timeout: must be more than zero"),
        ("redis://:hunter2@h?health_check_interval=-1", "health_check_interval: must be more"),
        ("redis://:hunter2@h?health_check_interval=inf", "health_check_interval: must be more"),
        ("redis://:hunter2@h?streams=yes", "option streams: must be 1 or 0, not 'yes'"),
        ("redis://:hunter2@h?maxlen=5", "option maxlen: applies only with streams=1"),
        ("redis://:hunter2@h?streams=0&start=0", "option start: applies only with streams=1"),
    ],
)
def test_bad_urls_are_config_errors_without_credentials(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        driver_for(url)
    assert "hunter2" not in str(caught.value)


def test_describe_hides_credentials_and_options() -> None:
    secret = uuid.uuid4().hex
    assert driver_for(f"redis://:{secret}@127.0.0.1:6379/2?timeout=1").describe() == (
        "redis://***@127.0.0.1:6379/2"
    )
    assert driver_for(f"rediss://svc:{secret}@h").describe() == "rediss://***@h"
    assert driver_for("redis://h:1").describe() == "redis://h:1"


def test_streams_option_picks_the_streams_driver() -> None:
    assert type(driver_for("redis://h")) is RedisBroker
    assert type(driver_for("redis://h?streams=0")) is RedisBroker
    assert type(driver_for("redis://h?streams=false")) is RedisBroker
    streams = driver_for("rediss://:pw@h:1/2?streams=1")
    assert type(streams) is RedisStreamsBroker
    assert (streams.scheme, streams.describe()) == ("rediss", "rediss://***@h:1/2")
    assert type(driver_for("redis://h?streams=TRUE")) is RedisStreamsBroker


def test_glob_characters_make_pattern_subscriptions() -> None:
    assert [is_pattern(t) for t in ("a.b", "a.*", "a?", "a[bc]", "café")] == [
        False,
        True,
        True,
        True,
        False,
    ]


async def test_unreachable_server_fails_connect_quickly() -> None:
    driver = driver_for(f"redis://127.0.0.1:{free_port()}?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"cannot connect to redis://127\.0\.0\.1"):
        await driver.connect()
    assert time.monotonic() - started < 2.5
    assert driver.is_up is False
    await asyncio.wait_for(driver.close(), 2)


# --- delivery through the service ----------------------------------------------------------------


async def test_natively_published_messages_arrive_exactly_and_in_order(native: Redis) -> None:
    async with running_server(driver=driver_for(SHARED_URL)) as running:
        topic = channel()
        stream = await open_stream(running, [topic])
        payloads = [
            "héllo wörld — ✓ 🚀 日本語",
            json.dumps({"user": "zoë", "items": [1, 2.5, None, True], "nested": {"k": "v"}}),
            *(f"message {i}" for i in range(20)),
        ]
        for payload in payloads:
            assert await native.publish(topic, payload.encode()) == 1
        frames = await stream.messages(len(payloads))
        for event_id, (frame, payload) in enumerate(zip(frames, payloads, strict=True), 1):
            assert_message(frame, event_id, topic, payload)
        assert json.loads(frames[1].payload)["user"] == "zoë"


async def test_natively_published_bytes_reach_the_driver_unchanged(native: Redis) -> None:
    driver = driver_for(SHARED_URL)
    await driver.connect()
    try:
        topic = channel()
        got = Collector()
        await driver.subscribe(topic, got.on_message, got.on_error)
        bodies = [bytes(range(256)), "ünïcødé ✓".encode(), b"", b'{"a": [1, 2]}']
        for body in bodies:
            await native.publish(topic, body)
        await got.wait_for(len(bodies))
        assert got.messages == [(topic, body) for body in bodies]
    finally:
        await driver.close()


async def test_two_instances_each_deliver_every_message(native: Redis) -> None:
    async with (
        running_server(driver=driver_for(SHARED_URL)) as first,
        running_server(driver=driver_for(SHARED_URL)) as second,
    ):
        topic = channel()
        first_stream = await open_stream(first, [topic])
        second_stream = await open_stream(second, [topic])
        for i in range(5):
            assert await native.publish(topic, b"fan-out %d" % i) == 2
        for stream in (first_stream, second_stream):
            frames = await stream.messages(5)
            for i, frame in enumerate(frames):
                assert_message(frame, i + 1, topic, f"fan-out {i}")


async def test_publish_api_on_one_instance_reaches_the_other() -> None:
    async with (
        running_server(driver=driver_for(SHARED_URL)) as publisher,
        running_server(driver=driver_for(SHARED_URL)) as reader,
    ):
        topic = channel()
        stream = await open_stream(reader, [topic])
        await publisher.publish(topic, "across instances ✓")
        await publisher.publish(topic, "second")
        assert_message(await stream.data_frame(), 1, topic, "across instances ✓")
        assert_message(await stream.data_frame(), 2, topic, "second")
        assert await metric(publisher, "unifrost_messages_received_total") == 0


async def test_pattern_subscriptions_carry_the_actual_channel(native: Redis) -> None:
    async with running_server(driver=driver_for(SHARED_URL)) as running:
        base = channel()
        star = await open_stream(running, [f"{base}.*"])
        one_char = await open_stream(running, [f"{base}.?"])
        choice = await open_stream(running, [f"{base}.[ab]"])
        exact = await open_stream(running, [f"{base}.a"])
        await running.publish(f"{base}.a", "one")
        await running.publish(f"{base}.bc", "two")
        await native.publish(f"{base}.c", b"three")
        frames = await star.messages(3)
        assert [(f.id, f.topic, f.payload) for f in frames] == [
            ("1", f"{base}.a", "one"),
            ("2", f"{base}.bc", "two"),
            ("3", f"{base}.c", "three"),
        ]
        frames = await one_char.messages(2)
        assert [(f.topic, f.payload) for f in frames] == [
            (f"{base}.a", "one"),
            (f"{base}.c", "three"),
        ]
        assert_message(await choice.data_frame(), 1, f"{base}.a", "one")
        assert_message(await exact.data_frame(), 1, f"{base}.a", "one")
        await running.publish(f"{base}.b", "last")
        assert_message(await choice.data_frame(), 2, f"{base}.b", "last")
        assert_message(await one_char.data_frame(), 3, f"{base}.b", "last")
        assert await metric(running, "unifrost_broker_subscriptions") == 4


async def test_channels_an_acl_forbids_are_subscription_failures() -> None:
    acl = ("--user", "svc", "on", ">svc-pass", "~*", "&public.*", "+@all")
    async with redis_server(*acl) as server:
        url = f"redis://svc:svc-pass@127.0.0.1:{server.port}"
        async with running_server(driver=driver_for(url)) as running:
            consumer_id = await running.create_consumer([])
            stream = await running.stream(consumer_id)
            opened.append(stream)
            await stream.opening()
            response = await running.api(
                "POST",
                f"/consumers/{consumer_id}/subscriptions",
                {"add": ["secret.plans", "public.news"], "remove": []},
            )
            assert response.status == 200, response.text
            result: Any = response.json()
            assert result["subscriptions"] == ["public.news"]
            assert [(e["topic"], e["code"]) for e in result["errors"]] == [
                ("secret.plans", "subscription-failure")
            ]
            message = result["errors"][0]["message"]
            assert message == (
                "Redis refused the subscription to 'secret.plans': this user has no"
                " permissions to access one of the channels used as arguments"
            )
            assert "svc-pass" not in message
            response = await running.api("POST", "/publish?topic=secret.plans", "x")
            assert response.status == 502
            assert response.json()["error"]["message"].startswith(
                "Redis refused the publish to 'secret.plans': this user has no permissions"
            )
            await running.publish("public.news", "still fine")
            assert_message(await stream.data_frame(), 1, "public.news", "still fine")
            assert running.broker.is_up is True


# --- outages --------------------------------------------------------------------------------------


async def test_broker_restart_is_survived_on_the_same_stream() -> None:
    async with redis_server() as server:
        driver = driver_for(f"{server.url}?max_reconnect_wait=0.3")
        async with running_server(driver=driver) as running:
            topic, base = channel(), channel()
            stream = await open_stream(running, [topic, f"{base}.*"])
            await running.publish(topic, "before")
            assert_message(await stream.data_frame(), 1, topic, "before")

            server.kill()
            await assert_outage_seen(running, stream, topic)

            await server.start()
            await assert_recovery_seen(running, stream)
            await running.publish(topic, "after")
            await running.publish(f"{base}.x", "pattern after")
            assert_message(await stream.data_frame(), 2, topic, "after")
            assert_message(await stream.data_frame(), 3, f"{base}.x", "pattern after")


async def test_password_reaches_the_server_and_never_the_logs() -> None:
    secret = uuid.uuid4().hex
    password = f"p@ss:w/rd,{secret}"  # needs percent-encoding in a URL
    encoded = quote(password, safe="")
    async with redis_server("--requirepass", password) as server:
        url = f"redis://:{encoded}@127.0.0.1:{server.port}/0?max_reconnect_wait=0.2"
        with captured_logs() as logs:
            async with running_server(driver=driver_for(url)) as running:
                topic = channel()
                stream = await open_stream(running, [topic])
                await running.publish(topic, "authenticated")
                assert_message(await stream.data_frame(), 1, topic, "authenticated")
                assert running.broker.describe() == f"redis://***@127.0.0.1:{server.port}/0"
                server.kill()
                assert error_code(await stream.data_frame()) == "broker-unavailable"
                await asyncio.sleep(0.5)  # a few failed reconnect attempts get logged
                await server.start()
                assert error_code(await stream.data_frame(timeout=10)) == "broker-recovered"
                metrics_text = (await running.api("GET", "/metrics")).text
        wrong = driver_for(f"redis://:wrong-{encoded}@127.0.0.1:{server.port}")
        with pytest.raises(BrokerUnavailable, match="cannot connect") as refused:
            await wrong.connect()
        await wrong.close()
    text = logs.getvalue()
    assert "broker.error" in logged_events(text)
    for leak in (password, encoded, secret):
        assert leak not in text
        assert leak not in metrics_text
        assert leak not in str(refused.value)


async def test_close_does_not_hang_while_the_broker_is_gone() -> None:
    async with redis_server() as server:
        driver = driver_for(f"{server.url}?max_reconnect_wait=0.2")
        await driver.connect()
        got = Collector()
        await driver.subscribe(channel(), got.on_message, got.on_error)
        server.kill()
        deadline = time.monotonic() + 5
        while driver.is_up:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        with pytest.raises(BrokerUnavailable):
            await driver.publish("a", b"x")
        started = time.monotonic()
        await driver.close()
        assert time.monotonic() - started < 1
        assert got.errors == []


async def test_health_check_finds_a_frozen_server_within_its_bound() -> None:
    interval, timeout = 0.3, 0.5
    async with redis_server() as server:
        url = (
            f"{server.url}?health_check_interval={interval}&timeout={timeout}"
            "&connect_timeout=0.5&max_reconnect_wait=0.3"
        )
        async with running_server(driver=driver_for(url)) as running:
            topic = channel()
            stream = await open_stream(running, [topic])
            # Silent for several intervals: every PING is answered, nothing is reported.
            await asyncio.sleep(5 * interval)
            await running.publish(topic, "still here")
            assert_message(await stream.data_frame(), 1, topic, "still here")
            assert await metric(running, "unifrost_broker_up") == 1

            server.pause()  # the connection stays open; no reset ever comes
            paused = time.monotonic()
            assert error_code(await stream.data_frame(timeout=5)) == "broker-unavailable"
            assert time.monotonic() - paused < interval + timeout + 0.5
            assert (await running.public_api("GET", "/readyz")).status == 503

            server.resume()
            await assert_recovery_seen(running, stream)
            await running.publish(topic, "after")
            assert_message(await stream.data_frame(), 2, topic, "after")
