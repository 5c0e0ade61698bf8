"""The Redis driver in streams mode (``?streams=1``) against real redis-server processes.

Most tests use the shared server on 127.0.0.1:6379 and delete the stream keys
they made. Tests that cut the service off, restart or freeze a server start
their own on a free port (``tests/brokers/redis_server.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from redis.asyncio import Redis

from service.brokers.base import Broker, BrokerError
from service.brokers.redis_config import parse_url
from service.brokers.redis_pubsub import RedisBroker
from service.config import Settings
from tests.brokers.contract import BrokerContract, Collector
from tests.brokers.redis_server import SHARED_URL, redis_server
from tests.brokers.streams import (
    assert_message,
    assert_outage_seen,
    assert_recovery_seen,
    error_code,
    open_stream,
)
from tests.support import captured_logs, running_server

STREAMS_URL = f"{SHARED_URL}?streams=1"

_made: list[str] = []  # stream keys created on the shared server by the running test


def driver_for(url: str) -> Broker:
    return RedisBroker.from_url(url, Settings())


def stream_key(prefix: str = "unifrost.test.stream") -> str:
    """A fresh key on the shared server, deleted when the test ends."""
    key = f"{prefix}.{uuid.uuid4().hex[:12]}"
    _made.append(key)
    return key


@pytest.fixture(autouse=True)
async def _delete_streams() -> AsyncIterator[None]:
    yield
    keys, _made[:] = list(_made), []
    if keys:
        client = Redis.from_url(SHARED_URL, socket_connect_timeout=2)
        try:
            await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
async def native() -> AsyncIterator[Redis]:
    """A plain redis-py client on the shared server, as another application uses it."""
    client = Redis.from_url(SHARED_URL, socket_connect_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def connected() -> AsyncIterator[list[Broker]]:
    """Drivers a test connects; closed when it ends."""
    drivers: list[Broker] = []
    yield drivers
    for driver in drivers:
        await asyncio.wait_for(driver.close(), 5)


async def connect(drivers: list[Broker], url: str = STREAMS_URL) -> Broker:
    driver = driver_for(url)
    drivers.append(driver)
    await asyncio.wait_for(driver.connect(), 5)
    return driver


async def wait_until_down(driver: Broker, timeout: float) -> float:
    """Seconds until ``driver`` reports the broker down; fails after ``timeout``."""
    started = time.monotonic()
    while driver.is_up:
        assert time.monotonic() - started < timeout, "the outage was not noticed"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


# --- the shared contract -------------------------------------------------------------------------


class TestRedisStreamsContract(BrokerContract):
    async def make_broker(self) -> Broker:
        return driver_for(STREAMS_URL)

    def broker_from_url(self, url: str) -> Broker:
        return driver_for(url)

    def url_with_password(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:6379/0?streams=1"

    def topic(self) -> str:
        return stream_key("contract")


# --- URLs -----------------------------------------------------------------------------------------


def test_streams_options_parse() -> None:
    plain = parse_url("redis://h?streams=1")
    assert (plain.streams, plain.maxlen, plain.start) == (True, 10_000, None)
    full = parse_url("redis://h?streams=1&maxlen=50&start=0&health_check_interval=2")
    assert (full.maxlen, full.start, full.health_check_interval) == (50, (0, 0), 2.0)
    assert parse_url("redis://h?streams=1&start=1700000000000").start == (1_700_000_000_000, 0)
    assert parse_url("redis://h?streams=1&start=5-3").start == (5, 3)
    assert parse_url("redis://h?streams=1&start=$").start is None
    assert parse_url("redis://h?streams=1&maxlen=0").maxlen == 0


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("streams=2", "option streams: must be 1 or 0, not '2'"),
        ("streams=1&maxlen=-1", "option maxlen: must be a whole number of entries"),
        ("streams=1&maxlen=1.5", "option maxlen: must be a whole number of entries"),
        ("streams=1&maxlen=", "option maxlen: must be a whole number of entries"),
        ("streams=1&start=abc", r"option start: must be \$ or a stream id <ms>\[-<seq>\]"),
        ("streams=1&start=1-2-3", "option start: must be \\$ or a stream id"),
        ("streams=1&start=", "option start: must be \\$ or a stream id"),
        ("streams=1&start=18446744073709551616", "option start: .* past the largest stream id"),
        ("maxlen=10", "option maxlen: applies only with streams=1"),
        ("start=0", "option start: applies only with streams=1"),
        ("streams=1&block=5", "unknown Redis URL option 'block'"),
    ],
)
def test_bad_streams_options_are_config_errors(query: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        driver_for(f"redis://:hunter2@h?{query}")
    assert "hunter2" not in str(caught.value)


# --- delivery through the service ----------------------------------------------------------------


async def test_natively_added_entries_arrive_exactly_and_in_order(native: Redis) -> None:
    async with running_server(driver=driver_for(STREAMS_URL)) as running:
        topic = stream_key()
        stream = await open_stream(running, [topic])
        payloads = [
            "héllo wörld — ✓ 🚀 日本語",
            json.dumps({"user": "zoë", "items": [1, 2.5, None, True], "nested": {"k": "v"}}),
            *(f"message {i}" for i in range(20)),
        ]
        for payload in payloads:
            await native.xadd(topic, {"data": payload.encode()})
        frames = await stream.messages(len(payloads))
        for event_id, (frame, payload) in enumerate(zip(frames, payloads, strict=True), 1):
            assert_message(frame, event_id, topic, payload)


async def test_entries_of_other_applications(native: Redis, connected: list[Broker]) -> None:
    driver = await connect(connected)
    topic = stream_key()
    got = Collector()
    with captured_logs() as logs:
        await driver.subscribe(topic, got.on_message, got.on_error)
        await native.xadd(topic, {"data": bytes(range(256))})
        await native.xadd(topic, {"body": "single field ✓".encode()})  # any single field
        await native.xadd(topic, {"a": b"1", "b": b"2"})  # several, none named data: skipped
        await native.xadd(topic, {"meta": b"m", "data": b"the body", "more": b"x"})
        await native.xadd(topic, {"x": b"1", "y": b"2"})  # skipped, not logged again
        await native.xadd(topic, {"data": b""})
        await got.wait_for(4)
        await asyncio.sleep(0.1)
    assert got.messages == [
        (topic, bytes(range(256))),
        (topic, "single field ✓".encode()),
        (topic, b"the body"),
        (topic, b""),
    ]
    warnings = [json.loads(line) for line in logs.getvalue().splitlines() if "none" in line]
    assert len(warnings) == 1
    assert (warnings[0]["event"], warnings[0]["topic"]) == ("broker.error", topic)
    assert "has several fields and none named 'data'" in warnings[0]["error"]


async def test_two_instances_each_deliver_every_entry_and_publish_is_xadd(native: Redis) -> None:
    async with (
        running_server(driver=driver_for(STREAMS_URL)) as first,
        running_server(driver=driver_for(STREAMS_URL)) as second,
    ):
        topic = stream_key()
        first_stream = await open_stream(first, [topic])
        second_stream = await open_stream(second, [topic])
        for i in range(3):
            await native.xadd(topic, {"data": b"fan-out %d" % i})
        await first.publish(topic, "through the API ✓")
        for stream in (first_stream, second_stream):
            frames = await stream.messages(4)
            for i, frame in enumerate(frames[:3]):
                assert_message(frame, i + 1, topic, f"fan-out {i}")
            assert_message(frames[3], 4, topic, "through the API ✓")
        entries = await native.xrange(topic)
        assert [fields for _, fields in entries] == [
            *({b"data": b"fan-out %d" % i} for i in range(3)),
            {b"data": "through the API ✓".encode()},
        ]


async def test_publish_trims_to_about_maxlen(native: Redis, connected: list[Broker]) -> None:
    trimming = await connect(connected, f"{STREAMS_URL}&maxlen=10")
    topic = stream_key()
    for i in range(250):
        await trimming.publish(topic, b"%d" % i)
    # MAXLEN ~ trims whole nodes (100 entries each by default): at least 10 stay.
    assert 10 <= await native.xlen(topic) <= 110
    [(_, newest)] = await native.xrevrange(topic, count=1)
    assert newest == {b"data": b"249"}

    untrimmed = await connect(connected, f"{STREAMS_URL}&maxlen=0")
    kept = stream_key()
    for i in range(150):
        await untrimmed.publish(kept, b"%d" % i)
    assert await native.xlen(kept) == 150


async def test_patterns_are_refused_in_streams_mode() -> None:
    async with running_server(driver=driver_for(STREAMS_URL)) as running:
        topic = stream_key()
        consumer_id = await running.create_consumer([])
        response = await running.api(
            "POST",
            f"/consumers/{consumer_id}/subscriptions",
            {"add": ["orders.*", topic], "remove": []},
        )
        assert response.status == 200, response.text
        result: Any = response.json()
        assert result["subscriptions"] == [topic]
        assert [(e["topic"], e["code"]) for e in result["errors"]] == [
            ("orders.*", "subscription-failure")
        ]
        assert result["errors"][0]["message"] == (
            "cannot subscribe to 'orders.*': Redis Streams are read by exact name and have no"
            " patterns (glob characters * ? [); use pub/sub (without streams=1) for patterns"
        )
        response = await running.api("POST", f"/publish?topic={quote('a[bc]')}", "x")
        assert response.status == 502
        assert response.json()["error"]["message"].startswith("cannot publish to 'a[bc]'")
        assert running.broker.is_up is True


async def test_close_right_after_a_delivery_is_prompt(native: Redis) -> None:
    # The reader is then sending its next XREAD: a cancel landing there must not be lost.
    for _ in range(5):
        driver = driver_for(STREAMS_URL)
        await driver.connect()
        topic, got = stream_key(), Collector()
        await driver.subscribe(topic, got.on_message, got.on_error)
        await native.xadd(topic, {"data": b"x"})
        await got.wait_for(1)
        started = time.monotonic()
        await driver.close()
        assert time.monotonic() - started < 1


# --- where reading starts -------------------------------------------------------------------------


async def test_start_0_replays_the_retained_history_first(native: Redis) -> None:
    topic = stream_key()
    for i in range(3):
        await native.xadd(topic, {"data": b"old %d" % i})
    async with running_server(driver=driver_for(f"{STREAMS_URL}&start=0")) as running:
        stream = await open_stream(running, [topic])
        await native.xadd(topic, {"data": b"new"})
        frames = await stream.messages(4)
        assert [(f.id, f.payload) for f in frames] == [
            ("1", "old 0"),
            ("2", "old 1"),
            ("3", "old 2"),
            ("4", "new"),
        ]


async def test_start_id_and_default_start(native: Redis, connected: list[Broker]) -> None:
    topic = stream_key()
    ids = [await native.xadd(topic, {"data": b"old %d" % i}) for i in range(3)]
    after_first = await connect(connected, f"{STREAMS_URL}&start={ids[0].decode()}")
    at_end = await connect(connected)
    from_first, from_end = Collector(), Collector()
    await after_first.subscribe(topic, from_first.on_message, from_first.on_error)
    await at_end.subscribe(topic, from_end.on_message, from_end.on_error)
    await native.xadd(topic, {"data": b"new"})
    await from_first.wait_for(3)
    await from_end.wait_for(1)
    await asyncio.sleep(0.1)
    assert from_first.bodies == [b"old 1", b"old 2", b"new"]
    assert from_end.bodies == [b"new"]


async def test_replay_longer_than_one_read_keeps_order(
    native: Redis, connected: list[Broker]
) -> None:
    topic = stream_key()
    history = [b"entry %d" % i for i in range(350)]  # several XREAD batches
    for body in history:
        await native.xadd(topic, {"data": body})
    driver = await connect(connected, f"{STREAMS_URL}&start=0")
    got = Collector()
    await driver.subscribe(topic, got.on_message, got.on_error)
    await got.wait_for(len(history))
    await asyncio.sleep(0.1)
    assert got.bodies == history


# --- the topic set changes while a read is blocked ----------------------------------------------


async def test_topics_subscribed_during_a_blocked_read_are_read_at_once(
    native: Redis, connected: list[Broker]
) -> None:
    driver = await connect(connected, f"{STREAMS_URL}&health_check_interval=30")
    idle = Collector()
    await driver.subscribe(stream_key(), idle.on_message, idle.on_error)
    await asyncio.sleep(0.1)  # the reader now blocks for up to 30 s on that topic
    topics = [stream_key() for _ in range(20)]
    got = Collector()
    await asyncio.gather(*(driver.subscribe(t, got.on_message, got.on_error) for t in topics))
    started = time.monotonic()
    for topic in topics:
        await native.xadd(topic, {"data": topic.encode()})
    await got.wait_for(len(topics))
    assert time.monotonic() - started < 1
    assert sorted(got.messages) == sorted((t, t.encode()) for t in topics)
    latencies = []
    for _ in range(10):
        topic, one = stream_key(), Collector()
        await driver.subscribe(topic, one.on_message, one.on_error)
        started = time.monotonic()
        await native.xadd(topic, {"data": b"x"})
        await one.wait_for(1)
        latencies.append(time.monotonic() - started)
    assert max(latencies) < 0.5  # woken with CLIENT UNBLOCK, not at the end of the 30 s block
    assert idle.messages == []


async def test_without_client_unblock_a_new_topic_waits_for_the_read_to_end() -> None:
    acl = ("--user", "svc", "on", ">pw", "~*", "&*", "+@all", "-client|unblock")
    async with redis_server(*acl) as server:
        url = f"redis://svc:pw@127.0.0.1:{server.port}?streams=1&health_check_interval=0.5"
        native = Redis(port=server.port)
        driver = driver_for(url)
        try:
            with captured_logs() as logs:
                await driver.connect()
                first, second = Collector(), Collector()
                await driver.subscribe("first", first.on_message, first.on_error)
                await asyncio.sleep(0.1)
                await driver.subscribe("second", second.on_message, second.on_error)
                started = time.monotonic()
                await native.xadd("second", {"data": b"late"})
                assert await second.wait_for(1, timeout=3) == [("second", b"late")]
                waited = time.monotonic() - started
                await native.xadd("first", {"data": b"still read"})
                assert await first.wait_for(1) == [("first", b"still read")]
        finally:
            await driver.close()
            await native.aclose()
    assert waited < 0.5 + 0.3
    assert "Redis refused CLIENT ID/UNBLOCK" in logs.getvalue()
    assert "within 0.5s" in logs.getvalue()


async def test_a_key_that_becomes_another_type_ends_only_its_subscription(
    native: Redis, connected: list[Broker]
) -> None:
    driver = await connect(connected)
    broken, fine = stream_key(), stream_key()
    got_broken, got_fine = Collector(), Collector()
    await driver.subscribe(broken, got_broken.on_message, got_broken.on_error)
    await driver.subscribe(fine, got_fine.on_message, got_fine.on_error)
    await native.delete(broken)
    await native.set(broken, b"not a stream")
    await native.xadd(fine, {"data": b"one"})  # ends the blocked read; the next one fails
    deadline = time.monotonic() + 5
    while not got_broken.errors:
        assert time.monotonic() < deadline, "the broken topic was not ended"
        await asyncio.sleep(0.01)
    assert got_broken.errors == [
        f"Redis refused the subscription to {broken!r}: WRONGTYPE"
        " Operation against a key holding the wrong kind of value"
    ]
    await native.xadd(fine, {"data": b"two"})
    assert [b for _, b in await got_fine.wait_for(2)] == [b"one", b"two"]
    assert driver.is_up is True

    other_type = stream_key()
    await native.set(other_type, b"x")
    with pytest.raises(BrokerError, match="WRONGTYPE"):
        await driver.subscribe(other_type, got_fine.on_message, got_fine.on_error)


# --- outages --------------------------------------------------------------------------------------


async def test_entries_added_during_a_restart_arrive_after_recovery_exactly_once(
    tmp_path: Path,
) -> None:
    persistent = ("--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path))
    user = ("svc", ">svc-pass", "~*", "&*", "+@all")
    async with redis_server(*persistent, "--user", "svc", "on", *user[1:]) as server:
        url = (
            f"redis://svc:svc-pass@127.0.0.1:{server.port}"
            "?streams=1&max_reconnect_wait=0.2&connect_timeout=1"
        )
        native = Redis(port=server.port)  # the default user: another application
        try:
            async with running_server(driver=driver_for(url)) as running:
                topic, other = "orders", "alerts"
                stream = await open_stream(running, [topic, other])
                await running.publish(topic, "before")
                assert_message(await stream.data_frame(), 1, topic, "before")

                server.kill()
                await assert_outage_seen(running, stream, topic)
                # Back with its streams (append-only file), but refusing the service's
                # user for now: the outage goes on while other clients add entries.
                server.args = [*persistent, "--user", "svc", "off", *user[1:]]
                await server.start()
                assert await native.xlen(topic) == 1  # "before" survived the restart
                missed = [(topic if i % 3 else other, f"missed {i}") for i in range(12)]
                for name, payload in missed:
                    await native.xadd(name, {"data": payload.encode()})
                await asyncio.sleep(0.5)  # reconnect attempts keep failing
                assert running.broker.is_up is False

                await native.execute_command("ACL", "SETUSER", "svc", "on")
                await assert_recovery_seen(running, stream)
                frames = await stream.messages(len(missed))
                assert [f.id for f in frames] == [str(i + 2) for i in range(len(missed))]
                for name in (topic, other):  # in order per topic (streams are read side by side)
                    assert [f.payload for f in frames if f.topic == name] == [
                        payload for missed_name, payload in missed if missed_name == name
                    ]
                await running.publish(topic, "after")  # nothing else (no repeat) came first
                assert_message(await stream.data_frame(), len(missed) + 2, topic, "after")
        finally:
            await native.aclose()


async def test_entries_added_while_cut_off_arrive_in_order_across_reads() -> None:
    user = ("svc", ">pw", "~*", "&*", "+@all")
    async with redis_server("--user", "svc", "on", *user[1:]) as server:
        url = f"redis://svc:pw@127.0.0.1:{server.port}?streams=1&max_reconnect_wait=0.2"
        native = Redis(port=server.port)
        driver = driver_for(url)
        try:
            await driver.connect()
            got_a, got_b = Collector(), Collector()
            await driver.subscribe("a", got_a.on_message, got_a.on_error)
            await driver.subscribe("b", got_b.on_message, got_b.on_error)
            await native.xadd("a", {"data": b"a before"})
            await got_a.wait_for(1)

            await native.execute_command("ACL", "SETUSER", "svc", "off")
            await native.execute_command("CLIENT", "KILL", "USER", "svc")
            await wait_until_down(driver, 5)
            missed_a = [b"a %d" % i for i in range(250)]  # more than one XREAD's worth
            missed_b = [b"b %d" % i for i in range(30)]
            for body in missed_a:
                await native.xadd("a", {"data": body})
            for body in missed_b:
                await native.xadd("b", {"data": body})
            await native.execute_command("ACL", "SETUSER", "svc", "on")

            await got_a.wait_for(1 + len(missed_a))
            await got_b.wait_for(len(missed_b))
            await native.xadd("a", {"data": b"a after"})
            await got_a.wait_for(2 + len(missed_a))
            await asyncio.sleep(0.1)
            assert got_a.bodies == [b"a before", *missed_a, b"a after"]
            assert got_b.bodies == missed_b
            assert driver.is_up is True
        finally:
            await driver.close()
            await native.aclose()


async def test_a_server_that_lost_its_streams_delivers_new_entries() -> None:
    async with redis_server() as server:  # no persistence: a restart empties it
        driver = driver_for(f"{server.url}?streams=1&max_reconnect_wait=0.2")
        async with running_server(driver=driver) as running:
            stream = await open_stream(running, ["orders"])
            await running.publish("orders", "before")
            assert_message(await stream.data_frame(), 1, "orders", "before")
            server.kill()
            assert error_code(await stream.data_frame()) == "broker-unavailable"
            await server.start()
            assert error_code(await stream.data_frame(timeout=10)) == "broker-recovered"
            await running.publish("orders", "after")  # a new stream; its ids follow the clock
            assert_message(await stream.data_frame(), 2, "orders", "after")


async def test_health_check_finds_a_frozen_server_while_reading() -> None:
    interval, timeout = 0.3, 0.5
    async with redis_server() as server:
        url = (
            f"{server.url}?streams=1&health_check_interval={interval}&timeout={timeout}"
            "&connect_timeout=0.5&max_reconnect_wait=0.3"
        )
        async with running_server(driver=driver_for(url)) as running:
            stream = await open_stream(running, ["orders"])
            await asyncio.sleep(5 * interval)  # several empty blocked reads: no outage
            await running.publish("orders", "still here")
            assert_message(await stream.data_frame(), 1, "orders", "still here")

            server.pause()  # the connection stays open; no reset ever comes
            paused = time.monotonic()
            assert error_code(await stream.data_frame(timeout=5)) == "broker-unavailable"
            assert time.monotonic() - paused < interval + timeout + 0.5

            server.resume()
            await assert_recovery_seen(running, stream)
            await running.publish("orders", "after")
            assert_message(await stream.data_frame(), 2, "orders", "after")


async def test_health_check_finds_a_frozen_server_with_nothing_to_read() -> None:
    interval, timeout = 0.3, 0.5
    async with redis_server() as server:
        url = f"{server.url}?streams=1&health_check_interval={interval}&timeout={timeout}"
        driver = driver_for(url)
        try:
            await driver.connect()
            await asyncio.sleep(5 * interval)  # several PINGs answered
            assert driver.is_up is True
            server.pause()
            assert await wait_until_down(driver, 5) < interval + timeout + 0.5
        finally:
            server.resume()
            await driver.close()
