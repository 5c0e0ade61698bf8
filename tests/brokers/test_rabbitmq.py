"""The RabbitMQ driver against the real server at 127.0.0.1:5672 (guest/guest, vhost ``/``).

Outages are real. Most use a RabbitMQ user of the test's own: the server closes
its connections (``close_all_user_connections``) and refuses new ones
(``set_user_limits max-connections 0``) until the limit is lifted, so reconnect
attempts really fail while other clients of the shared server carry on. One test
restarts the broker application itself (``stop_app``/``start_app``, about 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from service.brokers import open_broker
from service.brokers.base import Broker, BrokerError, BrokerUnavailable
from service.brokers.rabbitmq import RabbitMQBroker, topic_matches
from service.config import RabbitMQSettings, Settings
from tests.brokers.contract import DELIVERY_TIMEOUT, BrokerContract, Collector
from tests.brokers.local_server import free_port
from tests.brokers.streams import error_code, open_stream
from tests.processes import LOOPBACK_PORTS, problem_lines, run
from tests.support import (
    Running,
    SseClient,
    captured_logs,
    log_records,
    logged_events,
    metric,
    running_server,
    wait_for,
)

HOST = "127.0.0.1:5672"
URL = f"amqp://guest:guest@{HOST}/"
CTL_TIMEOUT = 30.0
OUTAGE_TIMEOUT = 10.0
"""Upper bound for seeing an outage or a recovery; a passing test takes well under 1 s."""


def unique(prefix: str = "rmq") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def until(condition: Callable[[], bool], timeout: float = OUTAGE_TIMEOUT) -> None:
    async def check() -> bool:
        return condition()

    await wait_for(check, timeout)


def driver(url: str = URL, exchange: str = "amq.topic") -> RabbitMQBroker:
    return RabbitMQBroker.from_url(url, Settings(rabbitmq=RabbitMQSettings(exchange=exchange)))


# --- rabbitmqctl, a test user of our own, native clients -------------------------------------


def ctl_sync(*args: str) -> None:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=CTL_TIMEOUT
    )
    assert result.returncode == 0, (args, result.stderr)


async def ctl(*args: str) -> str:
    """``rabbitmqctl`` without blocking the event loop the server under test runs on."""
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CTL_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (args, err.decode())
    return out.decode()


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    password: str

    def url(self, query: str = "reconnect_interval=0.2") -> str:
        return f"amqp://{self.name}:{self.password}@{HOST}/?{query}"


@pytest.fixture
def rabbit_user() -> Iterator[User]:
    """A RabbitMQ user with full rights on ``/``, deleted afterwards."""
    user = User(unique("unifrost-test"), f"s3cret-{uuid.uuid4().hex}")
    ctl_sync("add_user", user.name, user.password)
    try:
        ctl_sync("set_permissions", "-p", "/", user.name, ".*", ".*", ".*")
        yield user
    finally:
        ctl_sync("delete_user", user.name)


@contextlib.asynccontextmanager
async def outage(user: User) -> AsyncIterator[None]:
    """Close ``user``'s connections and refuse new ones until the block ends."""
    await ctl("set_user_limits", user.name, '{"max-connections": 0}')
    try:
        await ctl("close_all_user_connections", user.name, "unifrost outage test")
        yield
    finally:
        await ctl("clear_user_limits", user.name, "all")


async def port_accepts() -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", 5672)
    except OSError:
        return False
    writer.close()
    return True


@contextlib.asynccontextmanager
async def stopped_broker() -> AsyncIterator[None]:
    """A real broker restart: ``stop_app`` now, ``start_app`` when the block ends."""
    await ctl("stop_app")
    try:
        yield
    finally:
        await ctl("start_app")
        await wait_for(port_accepts, 60, interval=0.1)


class Native:
    """aio-pika used directly: publishes as any other application would."""

    def __init__(self, connection: AbstractRobustConnection, channel: AbstractChannel) -> None:
        self.connection = connection
        self.channel = channel

    async def publish(self, key: str, body: bytes, exchange: str = "amq.topic") -> None:
        target = await self.channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(body), routing_key=key, mandatory=False)


@pytest.fixture
async def native() -> AsyncIterator[Native]:
    connection = await aio_pika.connect_robust(URL, timeout=5)
    try:
        channel = await connection.channel(publisher_confirms=True)
        yield Native(connection, channel)
    finally:
        await connection.close()


@pytest.fixture
async def exchange(native: Native) -> AsyncIterator[str]:
    """The name of a topic exchange of this test's own, deleted afterwards."""
    name = unique("unifrost-test-exchange")
    yield name
    await native.channel.exchange_delete(name)


# --- SSE helpers ------------------------------------------------------------------------------


async def topic_frames(client: SseClient, count: int) -> list[tuple[str | None, str, str]]:
    return [(f.id, f.topic, f.payload) for f in await client.messages(count)]


async def readyz(running: Running) -> int:
    return (await running.public_api("GET", "/readyz")).status


# --- 1. the driver contract -------------------------------------------------------------------


class TestRabbitMQContract(BrokerContract):
    async def make_broker(self) -> Broker:
        return driver()

    def url_with_password(self, password: str) -> str:
        return f"amqp://guest:{password}@{HOST}/"


# --- URLs, connecting, configuration ----------------------------------------------------------


def test_from_url_parses_only_and_hides_the_password() -> None:
    broker = open_broker("amqps://app:hunter2-secret@rabbit.example:5671/prod", Settings())
    assert isinstance(broker, RabbitMQBroker)
    assert broker.scheme == "amqps"
    assert broker.describe() == "amqps://***@rabbit.example:5671/prod"
    assert broker.is_up is False
    with pytest.raises(ValueError, match="invalid broker URL") as raised:
        open_broker("amqp://app:hunter2-secret@host:notaport/", Settings())
    assert "hunter2-secret" not in str(raised.value)


async def test_connect_fails_fast_without_a_broker() -> None:
    broker = driver(f"amqp://guest:hunter2-secret@127.0.0.1:{free_port()}/")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="cannot connect to amqp://\\*\\*\\*@") as raised:
        await broker.connect()
    assert time.monotonic() - started < 10
    assert "hunter2-secret" not in str(raised.value)
    assert broker.is_up is False
    await asyncio.wait_for(broker.close(), 5)
    await asyncio.wait_for(broker.close(), 5)


async def test_connect_gives_up_on_a_server_that_never_answers() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept the TCP connection, never speak AMQP

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        broker = driver(f"amqp://guest:guest@127.0.0.1:{port}/")
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="cannot connect"):
            await broker.connect()
        assert 1 < time.monotonic() - started <= 10.5
        assert accepted
        await asyncio.wait_for(broker.close(), 5)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"amqp://guest:wrong-s3cret-password@{HOST}/", "ACCESS_REFUSED"),
        (f"amqp://guest:guest@{HOST}/no-such-vhost-{uuid.uuid4().hex[:6]}", "unknown vhost"),
    ],
)
async def test_connect_refused_by_the_broker_is_unavailable(url: str, reason: str) -> None:
    broker = driver(url)
    with captured_logs() as logs, pytest.raises(BrokerUnavailable, match=reason) as raised:
        await broker.connect()
    assert "wrong-s3cret-password" not in str(raised.value)
    assert "wrong-s3cret-password" not in logs.getvalue()
    await broker.close()


def test_cli_exits_1_with_one_line_when_the_broker_is_unreachable() -> None:
    url = f"amqp://guest:hunter2-secret@127.0.0.1:{free_port()}/"
    result = run(["serve", "--broker", url, *LOOPBACK_PORTS])
    assert result.returncode == 1
    lines = problem_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("unifrost: cannot start: cannot connect to amqp://***@127.0.0.1:")
    assert "hunter2-secret" not in result.stderr + result.stdout


async def test_custom_exchange_is_declared_durable_topic(exchange: str, native: Native) -> None:
    broker = driver(exchange=exchange)
    await broker.connect()
    try:
        listing = await ctl("list_exchanges", "-p", "/", "name", "type", "durable", "auto_delete")
        assert f"{exchange}\ttopic\ttrue\tfalse" in listing.splitlines()
        got = Collector()
        await broker.subscribe("orders.*", got.on_message, got.on_error)
        await native.publish("orders.eu", b"via the custom exchange", exchange=exchange)
        await native.publish("orders.us", b"not routed here", exchange="amq.topic")
        await native.publish("orders.eu.late", b"one word too many", exchange=exchange)
        await native.publish("orders.end", b"witness", exchange=exchange)
        await broker.publish("orders.us", b"driver publish")
        messages = await got.wait_for(3)
        # One publisher's messages keep their order; the driver's may come anywhere.
        assert [m for m in messages if m[0] != "orders.us"] == [
            ("orders.eu", b"via the custom exchange"),
            ("orders.end", b"witness"),
        ]
        assert ("orders.us", b"driver publish") in messages
        assert len(got.messages) == 3
    finally:
        await broker.close()


async def test_exchange_of_another_type_is_a_clear_error(exchange: str, native: Native) -> None:
    await native.channel.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT)
    broker = driver(exchange=exchange)
    with pytest.raises(BrokerError, match="PRECONDITION_FAILED") as raised:
        await broker.connect()
    assert not isinstance(raised.value, BrokerUnavailable)
    assert broker.is_up is False
    await broker.close()


# --- 6. patterns ------------------------------------------------------------------------------

PATTERNS = [
    "a.b",
    "a.*",
    "*.b",
    "*",
    "*.*",
    "a.#",
    "#",
    "#.b",
    "a.#.c",
    "a.*.#",
    "#.*",
    "a.*.c",
    "#.#.c",
    "a..b",
    "a.b*",
]
KEYS = ["a", "b", "a.b", "a.c", "x.b", "a.b.c", "a.x.y.c", "a..b", "a.b*", "c", "", "a.b.b.b"]


def test_topic_matching_examples() -> None:
    assert topic_matches("a.*", "a.b")
    assert not topic_matches("a.*", "a.b.c")
    assert not topic_matches("a.*", "a")
    assert topic_matches("a.#", "a")
    assert topic_matches("a.#.c", "a.c")
    assert topic_matches("a.#.c", "a.x.y.c")
    assert topic_matches("#", "")
    assert not topic_matches("*", "")
    assert topic_matches("a.b*", "a.b*")
    assert not topic_matches("a.b*", "a.bc")
    # No pathological backtracking, however many "#" a client sends.
    started = time.monotonic()
    assert not topic_matches("#." * 100 + "z", ".".join("a" * 127))
    assert time.monotonic() - started < 0.5


async def test_topic_matching_agrees_with_rabbitmq(exchange: str, native: Native) -> None:
    """Every pattern x key pair: our matcher says what RabbitMQ's routing did."""
    channel = native.channel
    target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC)
    queues = {}
    for pattern in PATTERNS:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(target, pattern)
        queues[pattern] = queue
    for key in KEYS:
        await native.publish(key, key.encode(), exchange=exchange)
    for pattern, queue in queues.items():
        routed = set()
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            routed.add(message.body.decode())
        expected = {key for key in KEYS if topic_matches(pattern, key)}
        assert routed == expected, pattern
    assert {key for key in KEYS if topic_matches("a.*", key)} == {"a.b", "a.c", "a.b*"}


async def test_overlapping_patterns_each_get_the_message_exactly_once(
    exchange: str, native: Native
) -> None:
    broker = driver(exchange=exchange)
    await broker.connect()
    try:
        names = ["orders.*", "orders.eu", "orders.#", "#", "*.eu", "orders.us", "other.*"]
        got = {name: Collector() for name in names}
        subscriptions = {
            name: await broker.subscribe(name, c.on_message, c.on_error) for name, c in got.items()
        }
        await native.publish("orders.eu", b"one copy in the queue", exchange=exchange)
        for name in ["orders.*", "orders.eu", "orders.#", "#", "*.eu"]:
            assert await got[name].wait_for(1) == [("orders.eu", b"one copy in the queue")]
        # The exact match and the patterns no longer match together.
        await subscriptions["orders.eu"].unsubscribe()
        await native.publish("orders.eu.late", b"three words", exchange=exchange)
        await native.publish("orders.eu", b"again", exchange=exchange)
        # One queue, one consumer: once "#" has the last message, every subscription
        # has had its share of all three.
        await got["#"].wait_for(3)
        assert got["orders.*"].messages == [
            ("orders.eu", b"one copy in the queue"),
            ("orders.eu", b"again"),
        ]
        assert got["orders.eu"].bodies == [b"one copy in the queue"]
        assert got["orders.#"].bodies == [b"one copy in the queue", b"three words", b"again"]
        assert got["#"].messages == [
            ("orders.eu", b"one copy in the queue"),
            ("orders.eu.late", b"three words"),
            ("orders.eu", b"again"),
        ]
        assert got["*.eu"].bodies == [b"one copy in the queue", b"again"]
        assert got["orders.us"].messages == []
        assert got["other.*"].messages == []
        assert all(c.errors == [] for c in got.values())
    finally:
        await broker.close()


async def test_resubscribing_while_the_unbind_is_in_flight_keeps_the_binding(
    native: Native,
) -> None:
    broker = driver()
    await broker.connect()
    try:
        topic = unique()
        first, second = Collector(), Collector()
        subscription = await broker.subscribe(topic, first.on_message, first.on_error)
        # The unsubscribe's unbind is on the wire when the new subscribe arrives.
        _, again = await asyncio.gather(
            subscription.unsubscribe(),
            broker.subscribe(topic, second.on_message, second.on_error),
        )
        assert await bindings_of(topic) == {topic}
        await native.publish(topic, b"still bound")
        assert await second.wait_for(1) == [(topic, b"still bound")]
        assert first.messages == []
        await again.unsubscribe()
        assert await bindings_of(topic) == set()
    finally:
        await broker.close()


async def test_wildcard_streams_carry_the_actual_topic(native: Native) -> None:
    base = unique()
    async with running_server(broker=URL) as running:
        temps = await open_stream(running, [f"{base}.*.temp"])
        everything = await open_stream(running, [f"{base}.#"])
        both = await open_stream(running, [f"{base}.*.temp", f"{base}.#"])
        await native.publish(f"{base}.kitchen.temp", b"21.5")
        await native.publish(f"{base}.kitchen.humidity", b"40%")
        await native.publish(f"{base}.hall.temp", b"19")
        assert await topic_frames(temps, 2) == [
            ("1", f"{base}.kitchen.temp", "21.5"),
            ("2", f"{base}.hall.temp", "19"),
        ]
        assert await topic_frames(everything, 3) == [
            ("1", f"{base}.kitchen.temp", "21.5"),
            ("2", f"{base}.kitchen.humidity", "40%"),
            ("3", f"{base}.hall.temp", "19"),
        ]
        # Both subscriptions of one consumer match: one frame per subscription.
        assert await topic_frames(both, 5) == [
            ("1", f"{base}.kitchen.temp", "21.5"),
            ("2", f"{base}.kitchen.temp", "21.5"),
            ("3", f"{base}.kitchen.humidity", "40%"),
            ("4", f"{base}.hall.temp", "19"),
            ("5", f"{base}.hall.temp", "19"),
        ]
        assert await metric(running, "unifrost_broker_subscriptions") == 2
        for client in (temps, everything, both):
            client.close()


# --- 2-4. native messages, several instances --------------------------------------------------


async def test_native_messages_arrive_with_exact_bytes_and_in_order(native: Native) -> None:
    topic = unique()
    bodies = [
        "grüße, 世界 🌍".encode(),
        b'{"price": 12.5, "tags": ["a", "b"], "nested": {"ok": true}}',
        *[f"message {i}".encode() for i in range(20)],
    ]
    broker = driver()
    await broker.connect()
    try:
        got = Collector()
        await broker.subscribe(topic, got.on_message, got.on_error)
        async with running_server(broker=URL) as running:
            client = await open_stream(running, [topic])
            for body in [*bodies, b"\xff\xfe not utf-8 \x00"]:
                await native.publish(topic, body)
            frames = await topic_frames(client, len(bodies) + 1)
            assert frames[:-1] == [
                (str(i), topic, body.decode()) for i, body in enumerate(bodies, start=1)
            ]
            assert frames[-1] == (str(len(bodies) + 1), topic, "\ufffd\ufffd not utf-8 \x00")
            client.close()
        assert got.bodies == [*bodies, b"\xff\xfe not utf-8 \x00"]
    finally:
        await broker.close()


async def test_two_instances_both_deliver_every_message(native: Native) -> None:
    topic = unique()
    async with running_server(broker=URL) as first, running_server(broker=URL) as second:
        on_first = await open_stream(first, [topic])
        on_second = await open_stream(second, [topic])
        for i in range(5):
            await native.publish(topic, f"fan-out {i}".encode())
        expected = [(str(i + 1), topic, f"fan-out {i}") for i in range(5)]
        assert await topic_frames(on_first, 5) == expected
        assert await topic_frames(on_second, 5) == expected
        on_first.close()
        on_second.close()


async def test_publish_on_one_instance_reaches_a_stream_on_the_other() -> None:
    topic = unique()
    async with running_server(broker=URL) as first, running_server(broker=URL) as second:
        listener = await open_stream(second, [topic])
        await first.publish(topic, "from the first instance ✓")
        await first.publish(topic, b'{"n": 2}')
        assert await topic_frames(listener, 2) == [
            ("1", topic, "from the first instance ✓"),
            ("2", topic, '{"n": 2}'),
        ]
        assert await metric(first, "unifrost_broker_subscriptions") == 0
        listener.close()


# --- 7. topics RabbitMQ cannot take -----------------------------------------------------------


async def test_topic_longer_than_a_routing_key_is_a_subscription_failure(native: Native) -> None:
    base = unique()
    too_long = base + "x" * (256 - len(base))
    too_long_utf8 = base + "é" * 123  # 139 characters, 262 bytes
    longest = base + "y" * (255 - len(base))
    assert (len(too_long), len(longest), len(too_long_utf8.encode())) == (256, 255, 262)
    async with running_server(broker=URL) as running:
        consumer_id = await running.create_consumer()
        client = await running.stream(consumer_id)
        await client.opening()
        response = await running.api(
            "POST",
            f"/consumers/{consumer_id}/subscriptions",
            {"add": [too_long, longest, too_long_utf8]},
        )
        assert response.status == 200, response.text
        body = response.json()
        assert body["subscriptions"] == [longest]
        errors = {e["topic"]: e for e in body["errors"]}
        assert set(errors) == {too_long, too_long_utf8}
        assert errors[too_long]["code"] == "subscription-failure"
        assert errors[too_long]["message"] == (
            "topic is 256 bytes of UTF-8; RabbitMQ routing keys are at most 255 bytes"
        )
        assert "262 bytes" in errors[too_long_utf8]["message"]
        # Nothing else broke: the 255-byte topic works, the broker is up.
        await native.publish(longest, b"longest routing key")
        assert await topic_frames(client, 1) == [("1", longest, "longest routing key")]
        publish = await running.api("POST", f"/publish?topic={too_long}", b"x")
        assert publish.status == 502
        assert publish.json()["error"]["code"] == "broker-error"
        assert await readyz(running) == 200
        assert await metric(running, "unifrost_broker_up") == 1
        client.close()


async def test_subscription_the_server_refuses_leaves_the_rest_working(
    rabbit_user: User, native: Native
) -> None:
    """Topic permissions make RabbitMQ itself refuse a binding (closing the channel)."""
    base = unique()
    allowed = f"{base}.ok"
    await ctl(
        "set_topic_permissions", "-p", "/", rabbit_user.name, "amq.topic", "^.*$", f"^{base}\\.ok"
    )
    async with running_server(broker=rabbit_user.url()) as running:
        consumer_id = await running.create_consumer([allowed])
        client = await running.stream(consumer_id)
        await client.opening()
        response = await running.api(
            "POST", f"/consumers/{consumer_id}/subscriptions", {"add": [f"{base}.denied"]}
        )
        assert response.status == 200, response.text
        (error,) = response.json()["errors"]
        assert error["topic"] == f"{base}.denied"
        assert error["code"] == "subscription-failure"
        assert "ACCESS_REFUSED" in error["message"]
        assert response.json()["subscriptions"] == [allowed]
        # The consuming channel is reopened with the queue and its bindings; a message
        # or two published meanwhile may be lost, then everything flows as before.
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while True:
            await native.publish(allowed, b"probe")
            try:
                first = await client.data_frame(0.1)
            except TimeoutError:
                assert time.monotonic() < deadline, "the subscription never resumed"
                continue
            break
        assert (first.topic, first.payload) == (allowed, "probe")
        await native.publish(allowed, b"after")
        frames = [await client.data_frame()]
        while frames[-1].payload != "after":  # late probes, if any, come first
            frames.append(await client.data_frame())
        assert {(f.topic, f.payload) for f in frames[:-1]} <= {(allowed, "probe")}
        assert frames[-1].topic == allowed
        assert await readyz(running) == 200
        assert await metric(running, "unifrost_broker_up") == 1
        assert await metric(running, "unifrost_broker_reconnects_total") == 0
        client.close()


# --- 5. outages ---------------------------------------------------------------------------------


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.errors: list[str] = []

    def broker_down(self, reason: str) -> None:
        self.calls.append(("down", reason))

    def broker_up(self, reconnected: bool) -> None:
        self.calls.append(("up", reconnected))

    def broker_error(self, message: str) -> None:
        self.errors.append(message)

    def messages_dropped(self, topic: str, count: int, reason: str) -> None:
        self.calls.append(("dropped", topic))


async def bindings_of(routing_key_prefix: str) -> set[str]:
    listing = await ctl("list_bindings", "-p", "/", "source_name", "routing_key")
    return {
        key
        for source, _, key in (line.partition("\t") for line in listing.splitlines())
        if source == "amq.topic" and key.startswith(routing_key_prefix)
    }


async def test_driver_restores_subscriptions_after_an_outage(
    rabbit_user: User, native: Native
) -> None:
    base = unique()
    broker = driver(rabbit_user.url())
    listener = Listener()
    broker.set_listener(listener)
    await broker.connect()
    try:
        literal, pattern, dropped = Collector(), Collector(), Collector()
        await broker.subscribe(f"{base}.literal", literal.on_message, literal.on_error)
        await broker.subscribe(f"{base}.wild.*", pattern.on_message, pattern.on_error)
        gone = await broker.subscribe(f"{base}.dropped", dropped.on_message, dropped.on_error)
        assert listener.calls == [("up", False)]

        async with outage(rabbit_user):
            await until(lambda: not broker.is_up)
            assert listener.calls[1][0] == "down"
            assert "lost" in str(listener.calls[1][1])
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                await broker.publish(f"{base}.literal", b"while down")
            with pytest.raises(BrokerUnavailable):
                await broker.subscribe(f"{base}.late", literal.on_message, literal.on_error)
            assert time.monotonic() - started < 1
            await gone.unsubscribe()  # while down: unbound once the broker is back
            # Reconnect attempts are really refused.
            await until(lambda: bool(listener.errors))

        await until(lambda: broker.is_up)
        assert listener.calls[2:] == [("up", True)]
        assert await bindings_of(base) == {f"{base}.literal", f"{base}.wild.*"}
        await native.publish(f"{base}.literal", b"after")
        await native.publish(f"{base}.wild.x", b"wild after")
        await native.publish(f"{base}.dropped", b"nobody")
        assert await literal.wait_for(1) == [(f"{base}.literal", b"after")]
        assert await pattern.wait_for(1) == [(f"{base}.wild.x", b"wild after")]
        await broker.publish(f"{base}.literal", b"driver publish after")
        assert [b for _, b in await literal.wait_for(2)] == [b"after", b"driver publish after"]
        assert dropped.messages == []
        assert all(rabbit_user.password not in e for e in listener.errors)
    finally:
        await asyncio.wait_for(broker.close(), DELIVERY_TIMEOUT)
    assert broker.is_up is False
    assert listener.calls == [("up", False), listener.calls[1], ("up", True)]


async def test_close_during_an_outage_returns_promptly(rabbit_user: User) -> None:
    broker = driver(rabbit_user.url())
    await broker.connect()
    got = Collector()
    subscription = await broker.subscribe(unique(), got.on_message, got.on_error)
    async with outage(rabbit_user):
        await until(lambda: not broker.is_up)
        started = time.monotonic()
        await asyncio.wait_for(subscription.unsubscribe(), 1)
        await asyncio.wait_for(broker.close(), 2)
        await asyncio.wait_for(broker.close(), 1)
        assert time.monotonic() - started < 2
    assert broker.is_up is False
    with pytest.raises(BrokerError):
        await broker.publish("after-close", b"x")


async def test_stream_survives_a_broker_outage(rabbit_user: User, native: Native) -> None:
    base = unique()
    literal, wild = f"{base}.literal", f"{base}.wild.*"
    with captured_logs() as logs:
        async with running_server(broker=rabbit_user.url()) as running:
            client = await open_stream(running, [literal, wild])
            await native.publish(literal, b"before")
            assert await topic_frames(client, 1) == [("1", literal, "before")]
            assert await readyz(running) == 200
            assert await metric(running, "unifrost_broker_up") == 1

            async with outage(rabbit_user):
                frame = await client.data_frame(OUTAGE_TIMEOUT)
                assert error_code(frame) == "broker-unavailable"
                assert "lost" in frame.inner["error"]["message"]
                assert await readyz(running) == 503
                assert await metric(running, "unifrost_broker_up") == 0
                refused = await running.api("POST", f"/publish?topic={literal}", b"x")
                assert refused.status == 503
                assert refused.json()["error"]["code"] == "broker-unavailable"

                async def attempt_refused() -> bool:
                    return await metric(running, "unifrost_broker_errors_total") >= 1

                await wait_for(attempt_refused, OUTAGE_TIMEOUT)
                assert await readyz(running) == 503

            frame = await client.data_frame(OUTAGE_TIMEOUT)
            assert error_code(frame) == "broker-recovered"
            assert await readyz(running) == 200
            assert await metric(running, "unifrost_broker_up") == 1
            assert await metric(running, "unifrost_broker_reconnects_total") == 1
            # The same stream carries on: next ids, both subscriptions restored.
            await native.publish(literal, b"after")
            await native.publish(f"{base}.wild.x", b"wild after")
            await running.publish(literal, "published through the service")
            assert await topic_frames(client, 3) == [
                ("2", literal, "after"),
                ("3", f"{base}.wild.x", "wild after"),
                ("4", literal, "published through the service"),
            ]
            assert await metric(running, "unifrost_broker_subscriptions") == 2
            metrics_text = (await running.api("GET", "/metrics")).text
            client.close()
    output = logs.getvalue()
    assert rabbit_user.password not in output
    assert rabbit_user.password not in metrics_text
    assert "broker.disconnected" in logged_events(output)
    assert any(r.get("reconnected") is True for r in log_records(output))


async def test_stream_survives_a_broker_restart() -> None:
    base = unique()
    literal, wild = f"{base}.literal", f"{base}.wild.#"
    async with running_server(broker=f"{URL}?reconnect_interval=0.2") as running:
        client = await open_stream(running, [literal, wild])
        await running.publish(literal, "before")
        assert await topic_frames(client, 1) == [("1", literal, "before")]

        async with stopped_broker():
            frame = await client.data_frame(OUTAGE_TIMEOUT)
            assert error_code(frame) == "broker-unavailable"
            assert await readyz(running) == 503
            assert await metric(running, "unifrost_broker_up") == 0
            refused = await running.api("POST", f"/publish?topic={literal}", b"x")
            assert refused.status == 503

        frame = await client.data_frame(OUTAGE_TIMEOUT)
        assert error_code(frame) == "broker-recovered"
        assert await readyz(running) == 200
        assert await metric(running, "unifrost_broker_up") == 1
        assert await metric(running, "unifrost_broker_reconnects_total") == 1
        await running.publish(literal, "after")
        connection = await aio_pika.connect(URL, timeout=5)
        try:
            channel = await connection.channel()
            topic_exchange = await channel.get_exchange("amq.topic")
            await topic_exchange.publish(aio_pika.Message(b"native after"), f"{base}.wild.a.b")
        finally:
            await connection.close()
        assert await topic_frames(client, 2) == [
            ("2", literal, "after"),
            ("3", f"{base}.wild.a.b", "native after"),
        ]
        client.close()
