"""The NATS driver against real nats-server processes.

Most tests use the shared server on 127.0.0.1:4222 (``make test`` starts it;
if it is not reachable these tests fail). Tests that kill, restart or configure
a server start their own on a free port (``tests/brokers/nats_server.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import nats
import pytest
from nats.aio.client import Client

from service.brokers import open_broker
from service.brokers.base import Broker, BrokerError, BrokerUnavailable
from service.brokers.nats import NatsBroker
from service.brokers.nats_config import parse_url, subject_problem
from tests.brokers.contract import BrokerContract, Collector
from tests.brokers.nats_server import SHARED_URL, free_port, nats_server
from tests.brokers.streams import (
    assert_message,
    assert_outage_seen,
    assert_recovery_seen,
    error_code,
    open_stream,
    stream_of,
)
from tests.support import Running, captured_logs, logged_events, metric, running_server

# --- helpers -------------------------------------------------------------------------------------


def subject(prefix: str = "unifrost.test") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def native() -> AsyncIterator[Client]:
    """A plain nats-py client on the shared server, as another application uses it."""
    client = await nats.connect(SHARED_URL, connect_timeout=2, allow_reconnect=False)
    try:
        yield client
    finally:
        await client.close()


async def update(running: Running, consumer_id: str, add: list[str]) -> Any:
    response = await running.api(
        "POST", f"/consumers/{consumer_id}/subscriptions", {"add": add, "remove": []}
    )
    assert response.status == 200, response.text
    return response.json()


# --- the shared contract -------------------------------------------------------------------------


class TestNatsContract(BrokerContract):
    async def make_broker(self) -> Broker:
        return NatsBroker.from_url(SHARED_URL)

    def url_with_password(self, password: str) -> str:
        return f"nats://unifrost:{password}@127.0.0.1:4222"


# --- URLs and subjects ---------------------------------------------------------------------------


def test_url_forms_parse_to_servers_credentials_and_options() -> None:
    plain = parse_url("nats://127.0.0.1")
    assert plain.servers == ["nats://127.0.0.1:4222"]
    assert (plain.user, plain.password, plain.token) == (None, None, None)

    pool = parse_url(
        "nats://al%40ice:p%2Cw%3Ad@a.example:4222,b.example:5222,[::1]:6222"
        "?name=edge-1&connect_timeout=2s&timeout=1500ms&max_reconnect_wait=3"
        "&pending_msgs_limit=10&pending_bytes_limit=1MiB"
    )
    assert pool.servers == [
        "nats://a.example:4222",
        "nats://b.example:5222",
        "nats://[::1]:6222",
    ]
    assert (pool.user, pool.password, pool.token) == ("al@ice", "p,w:d", None)
    assert (pool.name, pool.connect_timeout, pool.timeout, pool.max_reconnect_wait) == (
        "edge-1",
        2.0,
        1.5,
        3.0,
    )
    assert (pool.pending_msgs_limit, pool.pending_bytes_limit) == (10, 1024 * 1024)

    token = parse_url("tls://s3cr3t-token@nats.example")
    assert token.servers == ["tls://nats.example:4222"]
    assert (token.user, token.token) == (None, "s3cr3t-token")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("nats://user:hunter2@", "needs a host"),
        ("nats://a:4222,,b:4222", "needs a host"),
        ("nats://user:hunter2@a:notaport", "invalid NATS server address 'a:notaport'"),
        ("nats://a:4222/vhost", "takes no path"),
        ("nats://u:hunter2@a,u:hunter3@b", "one set of credentials"),
        ("nats://user:hunter2@a?jetstream=1", "unknown NATS URL option 'jetstream'"),
        ("nats://a?timeout=0", "option timeout: must be more than zero"),
        ("nats://a?pending_msgs_limit=-3", "option pending_msgs_limit"),
        ("http://a", "unsupported broker scheme"),
    ],
)
def test_bad_urls_are_config_errors_without_credentials(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        open_broker(url)
    assert "hunter" not in str(caught.value)


def test_describe_lists_every_server_and_hides_credentials() -> None:
    secret = uuid.uuid4().hex
    driver = open_broker(f"nats://svc:{secret}@127.0.0.1:4222,127.0.0.1:4223?name=x")
    assert driver.describe() == "nats://***@127.0.0.1:4222,127.0.0.1:4223"
    assert open_broker(f"tls://{secret}@h").describe() == "tls://***@h:4222"
    assert open_broker("nats://h:1").describe() == "nats://h:1"


@pytest.mark.parametrize(
    ("topic", "wildcards", "problem"),
    [
        ("a b", True, "whitespace"),
        ("a\tb", True, "whitespace"),
        ("a..b", True, "empty tokens"),
        (".a", True, "empty tokens"),
        ("a.", True, "empty tokens"),
        ("a.>.b", True, "'>' must be the last token"),
        ("a.b*", True, "must be whole tokens"),
        ("a.>x", True, "must be whole tokens"),
        ("a.*", False, "cannot publish to a subject with a wildcard"),
        ("a.>", False, "cannot publish to a subject with a wildcard"),
    ],
)
def test_invalid_subjects_are_named(topic: str, wildcards: bool, problem: str) -> None:
    assert problem in (subject_problem(topic, wildcards=wildcards) or "")


def test_valid_subjects_pass() -> None:
    for topic in ("a", "a.b.c", "café.naïve", "$events.x", "a.*.c", "a.>", ">", "*"):
        assert subject_problem(topic, wildcards=True) is None
    assert subject_problem("a.b-c_d", wildcards=False) is None


# --- connecting ----------------------------------------------------------------------------------


async def test_unreachable_server_fails_connect_within_the_timeout() -> None:
    driver = open_broker(f"nats://127.0.0.1:{free_port()}?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="no server answered within 1s"):
        await driver.connect()
    assert time.monotonic() - started < 2.5
    assert driver.is_up is False
    await asyncio.wait_for(driver.close(), 2)


async def test_tls_urls_refuse_a_server_without_tls() -> None:
    driver = open_broker("tls://127.0.0.1:4222?connect_timeout=2")
    with pytest.raises(BrokerUnavailable, match="does not require TLS"):
        await driver.connect()
    assert driver.is_up is False
    await driver.close()


async def test_a_pool_with_a_dead_server_connects_to_the_live_one() -> None:
    url = f"nats://127.0.0.1:{free_port()},127.0.0.1:4222"
    driver = open_broker(url)
    try:
        await asyncio.wait_for(driver.connect(), 5)
        got = Collector()
        topic = subject()
        await driver.subscribe(topic, got.on_message, got.on_error)
        await driver.publish(topic, b"via the pool")
        assert await got.wait_for(1) == [(topic, b"via the pool")]
    finally:
        await driver.close()


async def test_credentials_reach_the_server_and_never_the_logs() -> None:
    secret = uuid.uuid4().hex
    password = f"p@ss:w/rd,{secret}"  # needs percent-encoding in a URL
    encoded = quote(password, safe="")
    async with nats_server("--user", "svc", "--pass", password) as server:
        url = f"nats://svc:{encoded}@127.0.0.1:{server.port}?max_reconnect_wait=0.2"
        with captured_logs() as logs:
            async with running_server(broker=url) as running:
                topic = subject()
                stream = await open_stream(running, [topic])
                await running.publish(topic, "authenticated")
                assert_message(await stream.data_frame(), 1, topic, "authenticated")
                assert running.broker.describe() == f"nats://***@127.0.0.1:{server.port}"
                metrics_text = (await running.api("GET", "/metrics")).text
                # An outage makes the driver report errors, the loss and the recovery.
                server.kill()
                assert error_code(await stream.data_frame()) == "broker-unavailable"
                await server.start()
                assert error_code(await stream.data_frame()) == "broker-recovered"
        wrong = open_broker(f"nats://svc:wrong-{encoded}@127.0.0.1:{server.port}")
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="refused the credentials") as refused:
            await wrong.connect()
        assert time.monotonic() - started < 2.5  # refused at once, not retried until timeout
        await wrong.close()
    text = logs.getvalue()
    for event in ("broker.connected", "broker.error", "broker.disconnected"):
        assert event in logged_events(text)
    for leak in (password, encoded, secret):
        assert leak not in text
        assert leak not in metrics_text
        assert leak not in str(refused.value)


# --- delivery through the service ----------------------------------------------------------------


async def test_natively_published_messages_arrive_exactly_and_in_order(native: Client) -> None:
    async with running_server(broker=SHARED_URL) as running:
        topic = subject()
        stream = await open_stream(running, [topic])
        payloads = [
            "héllo wörld — ✓ 🚀 日本語",
            json.dumps({"user": "zoë", "items": [1, 2.5, None, True], "nested": {"k": "v"}}),
            *(f"message {i}" for i in range(20)),
        ]
        for payload in payloads:
            await native.publish(topic, payload.encode())
        await native.flush()
        frames = await stream.messages(len(payloads))
        for event_id, (frame, payload) in enumerate(zip(frames, payloads, strict=True), 1):
            assert_message(frame, event_id, topic, payload)
        assert json.loads(frames[1].payload)["user"] == "zoë"


async def test_natively_published_bytes_reach_the_driver_unchanged(native: Client) -> None:
    driver = open_broker(SHARED_URL)
    await driver.connect()
    try:
        topic = subject()
        got = Collector()
        await driver.subscribe(topic, got.on_message, got.on_error)
        bodies = [bytes(range(256)), "ünïcødé ✓".encode(), b"", b'{"a": [1, 2]}']
        for body in bodies:
            await native.publish(topic, body)
        await native.flush()
        await got.wait_for(len(bodies))
        assert got.messages == [(topic, body) for body in bodies]
    finally:
        await driver.close()


async def test_two_instances_each_deliver_every_message(native: Client) -> None:
    async with (
        running_server(broker=SHARED_URL) as first,
        running_server(broker=SHARED_URL) as second,
    ):
        topic = subject()
        first_stream = await open_stream(first, [topic])
        second_stream = await open_stream(second, [topic])
        for i in range(5):
            await native.publish(topic, b"fan-out %d" % i)
        await native.flush()
        for stream in (first_stream, second_stream):
            frames = await stream.messages(5)
            for i, frame in enumerate(frames):
                assert_message(frame, i + 1, topic, f"fan-out {i}")


async def test_publish_api_on_one_instance_reaches_the_other() -> None:
    async with (
        running_server(broker=SHARED_URL) as publisher,
        running_server(broker=SHARED_URL) as reader,
    ):
        topic = subject()
        stream = await open_stream(reader, [topic])
        await publisher.publish(topic, "across instances ✓")
        await publisher.publish(topic, "second")
        assert_message(await stream.data_frame(), 1, topic, "across instances ✓")
        assert_message(await stream.data_frame(), 2, topic, "second")
        assert await metric(publisher, "unifrost_messages_received_total") == 0


async def test_wildcard_subscriptions_carry_the_actual_subject() -> None:
    async with running_server(broker=SHARED_URL) as running:
        base = subject()
        one_token = await open_stream(running, [f"{base}.*"])
        the_rest = await open_stream(running, [f"{base}.>"])
        await running.publish(f"{base}.a", "one")
        await running.publish(f"{base}.b.c", "deep")
        await running.publish(f"{base}.d", "two")
        assert_message(await one_token.data_frame(), 1, f"{base}.a", "one")
        assert_message(await one_token.data_frame(), 2, f"{base}.d", "two")
        frames = await the_rest.messages(3)
        assert [(f.id, f.topic, f.payload) for f in frames] == [
            ("1", f"{base}.a", "one"),
            ("2", f"{base}.b.c", "deep"),
            ("3", f"{base}.d", "two"),
        ]
        assert await metric(running, "unifrost_broker_subscriptions") == 2


async def test_invalid_subjects_are_subscription_failures_and_nothing_else_breaks() -> None:
    async with running_server(broker=SHARED_URL) as running:
        good = subject()
        consumer_id = await running.create_consumer([])
        stream = await stream_of(running, consumer_id)
        await stream.opening()
        bad = ["has space", "a..b", "a.>.b", "a.b*"]
        result = await update(running, consumer_id, [*bad, good])
        assert result["subscriptions"] == [good]
        assert [(e["topic"], e["code"]) for e in result["errors"]] == [
            (topic, "subscription-failure") for topic in bad
        ]
        messages = {e["topic"]: e["message"] for e in result["errors"]}
        assert messages["has space"] == (
            "invalid NATS subject 'has space': a subject must not contain whitespace"
        )
        assert "'>' must be the last token" in messages["a.>.b"]
        response = await running.api("POST", "/publish?topic=a..b", "x")
        assert response.status == 502
        assert "empty tokens" in response.json()["error"]["message"]
        response = await running.api("POST", "/publish?topic=a.*", "x")
        assert response.status == 502
        assert "wildcard" in response.json()["error"]["message"]
        await running.publish(good, "still fine")
        assert_message(await stream.data_frame(), 1, good, "still fine")
        assert running.broker.is_up is True
        assert await metric(running, "unifrost_broker_subscriptions") == 1


PERMISSIONS = """
authorization {
  users = [
    {user: "svc", password: "svc-pass",
     permissions: {publish: {deny: ["secret.>"]}, subscribe: {deny: ["secret.>"]}}}
  ]
}
"""
NO_PERMISSIONS = """
authorization { users = [ {user: "svc", password: "svc-pass"} ] }
"""


async def test_subjects_the_server_refuses_fail_alone() -> None:
    async with (
        nats_server(config=PERMISSIONS) as server,
        running_server(broker=f"nats://svc:svc-pass@127.0.0.1:{server.port}") as running,
    ):
        consumer_id = await running.create_consumer([])
        stream = await stream_of(running, consumer_id)
        await stream.opening()
        result = await update(running, consumer_id, ["secret.Plans", "public.news"])
        assert result["subscriptions"] == ["public.news"]
        [error] = result["errors"]
        assert (error["topic"], error["code"]) == ("secret.Plans", "subscription-failure")
        assert error["message"].startswith("NATS refused the subscription to 'secret.Plans'")
        assert "permissions violation" in error["message"]
        response = await running.api("POST", "/publish?topic=secret.Plans", "x")
        assert response.status == 502
        assert response.json()["error"]["message"] == (
            "NATS refused the publish to 'secret.Plans' (permissions violation)"
        )
        await running.publish("public.news", "allowed")
        assert_message(await stream.data_frame(), 1, "public.news", "allowed")
        assert running.broker.is_up is True
        assert await metric(running, "unifrost_broker_reconnects_total") == 0


# --- trouble -------------------------------------------------------------------------------------


async def test_broker_restart_is_survived_on_the_same_stream() -> None:
    async with nats_server() as server:
        url = f"{server.url}?max_reconnect_wait=0.3"
        async with running_server(broker=url) as running:
            topic = subject()
            stream = await open_stream(running, [topic])
            await running.publish(topic, "before")
            assert_message(await stream.data_frame(), 1, topic, "before")

            server.kill()
            await assert_outage_seen(running, stream, topic)

            await server.start()
            await assert_recovery_seen(running, stream)
            await running.publish(topic, "after")
            assert_message(await stream.data_frame(), 2, topic, "after")


async def test_a_connection_the_client_library_closed_is_replaced() -> None:
    async with running_server(broker=f"{SHARED_URL}?max_reconnect_wait=0.2") as running:
        topic = subject()
        stream = await open_stream(running, [topic])
        driver = running.broker
        gone = driver._nc
        # What nats-py does after a server -ERR it considers fatal.
        await gone.close()
        assert error_code(await stream.data_frame()) == "broker-unavailable"
        assert error_code(await stream.data_frame()) == "broker-recovered"
        assert driver._nc is not gone
        await running.publish(topic, "on the new connection")
        assert_message(await stream.data_frame(), 1, topic, "on the new connection")
        assert await metric(running, "unifrost_broker_reconnects_total") == 1


async def test_close_does_not_hang_while_the_broker_is_gone() -> None:
    async with nats_server() as server:
        driver = open_broker(server.url)
        await driver.connect()
        got = Collector()
        await driver.subscribe(subject(), got.on_message, got.on_error)
        server.kill()
        deadline = time.monotonic() + 5
        while driver.is_up:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(driver.publish(subject(), b"x"), 1)
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(driver.subscribe(subject(), got.on_message, got.on_error), 1)
        started = time.monotonic()
        await driver.close()
        await driver.close()
        assert time.monotonic() - started < 2


async def test_slow_consumer_drops_are_reported(native: Client) -> None:
    async with running_server(broker=f"{SHARED_URL}?pending_msgs_limit=1") as running:
        topic = subject()
        stream = await open_stream(running, [topic])
        total = 300
        for i in range(total):
            await native.publish(topic, b"burst %d" % i)
        await native.flush()
        delivered: list[str] = []
        dropped = 0
        while len(delivered) + dropped < total:
            frame = await stream.data_frame()
            if frame.topic == "/unifrost/error":
                error = frame.inner["error"]
                assert (error["code"], error["topic"]) == ("messages-dropped", topic)
                dropped += error["count"]
            else:
                assert frame.id == str(len(delivered) + 1)
                delivered.append(frame.payload)
        assert len(delivered) + dropped == total
        assert dropped > 0
        numbers = [int(p.split()[1]) for p in delivered]
        assert numbers == sorted(numbers)  # what arrives stays in order
        assert await metric(running, "unifrost_messages_dropped_total", reason="broker") == dropped


async def test_subscribe_and_publish_fail_cleanly_on_a_closed_driver() -> None:
    driver = open_broker(SHARED_URL)
    await driver.connect()
    await driver.close()
    got = Collector()
    with pytest.raises(BrokerUnavailable, match="closed"):
        await driver.publish("a", b"x")
    with pytest.raises(BrokerError):
        await driver.subscribe("a", got.on_message, got.on_error)


async def test_a_subscription_refused_after_a_reconnect_ends_alone() -> None:
    async with nats_server(config=NO_PERMISSIONS) as server:
        url = f"nats://svc:svc-pass@127.0.0.1:{server.port}?max_reconnect_wait=0.2"
        async with running_server(broker=url) as running:
            consumer_id = await running.create_consumer(["secret.plans", "public.news"])
            stream = await stream_of(running, consumer_id)
            await stream.opening()
            server.kill()
            assert error_code(await stream.data_frame()) == "broker-unavailable"
            assert server.config_path is not None
            server.config_path.write_text(PERMISSIONS)
            await server.start()
            frames = [await stream.data_frame(timeout=10) for _ in range(2)]
            by_code = {error_code(frame): frame.inner["error"] for frame in frames}
            assert set(by_code) == {"subscription-failure", "broker-recovered"}
            failure = by_code["subscription-failure"]
            assert failure["topic"] == "secret.plans"
            assert "permissions violation" in failure["message"]
            response = await running.api("GET", f"/consumers/{consumer_id}")
            assert response.json()["subscriptions"] == ["public.news"]
            await running.publish("public.news", "still subscribed")
            assert_message(await stream.data_frame(), 1, "public.news", "still subscribed")
            assert await metric(running, "unifrost_broker_subscriptions") == 1


async def test_a_cancelled_connect_leaves_nothing_running() -> None:
    before = asyncio.all_tasks()
    driver = open_broker(f"nats://127.0.0.1:{free_port()}")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(driver.connect(), 0.3)
    deadline = time.monotonic() + 3
    while asyncio.all_tasks() - before:
        assert time.monotonic() < deadline, asyncio.all_tasks() - before
        await asyncio.sleep(0.02)
    assert driver.is_up is False
