"""The Kafka driver against a real Kafka-compatible broker (tansu, see kafka_server.py).

Most tests share one session broker and use unique topics. Tests that kill and
restart a broker get their own (``own_kafka``); tansu keeps topics in memory,
so after a restart they re-create the topic before publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.brokers import open_broker
from service.brokers.base import Broker, BrokerError, BrokerUnavailable
from service.brokers.kafka import KafkaBroker
from service.brokers.kafka_config import topic_problem
from service.config import KafkaSettings, Settings
from tests.brokers.contract import BrokerContract, Collector
from tests.brokers.kafka_server import (  # noqa: F401 (fixtures)
    TansuServer,
    free_port,
    kafka_broker,
    own_kafka_broker,
)
from tests.brokers.streams import assert_outage_seen, assert_recovery_seen, open_stream
from tests.processes import problem_lines, run
from tests.support import Frame, captured_logs, metric, running_server

SASL = Settings(kafka=KafkaSettings(security_protocol="SASL_PLAINTEXT"))


def new_topic() -> str:
    return f"kafka-test-{uuid.uuid4().hex[:12]}"


# --- native Kafka clients (not our driver) ------------------------------------------------------


async def create_topics(server: TansuServer, names: Iterable[str], partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=server.address)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def partitions_of(server: TansuServer, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=server.address)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for p in described["partitions"])


@contextlib.asynccontextmanager
async def native_producer(server: TansuServer) -> AsyncIterator[Any]:
    producer = AIOKafkaProducer(bootstrap_servers=server.address, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def produce(server: TansuServer, topic: str, bodies: Iterable[bytes], **kw: Any) -> None:
    async with native_producer(server) as producer:
        for body in bodies:
            await producer.send_and_wait(topic, body, **kw)


# --- SSE helpers ----------------------------------------------------------------------------------


def assert_message(frame: Frame, event_id: int, topic: str, payload: str) -> None:
    assert (frame.id, frame.topic, frame.payload) == (str(event_id), topic, payload), frame


# --- the contract, twice ------------------------------------------------------------------------


class TestKafkaContract(BrokerContract):
    """Fresh topic names that do not exist yet: each subscription waits for the
    topic to appear (created by the publish) and reads it from its beginning."""

    @pytest.fixture(autouse=True)
    def _server(self, kafka: TansuServer) -> None:
        self.server = kafka

    async def make_broker(self) -> Broker:
        return KafkaBroker(self.server.url)

    def url_with_password(self, password: str) -> str:
        return f"kafka://relay:{password}@{self.server.address}"

    def broker_from_url(self, url: str) -> Broker:
        # Credentials in a kafka:// URL are SASL credentials, refused without SASL.
        return open_broker(url, SASL)


class TestKafkaContractExistingTopics(TestKafkaContract):
    """Topics created beforehand with three partitions: subscriptions start at
    the latest offset of every partition."""

    @pytest.fixture(autouse=True)
    async def _topics(self, _server: None) -> None:
        self.ready = [new_topic() for _ in range(3)]
        await create_topics(self.server, self.ready, partitions=3)

    def topic(self) -> str:
        return self.ready.pop()


# --- messages from native producers ---------------------------------------------------------------


async def test_native_messages_arrive_with_exact_bytes_in_order(kafka: TansuServer) -> None:
    topic = new_topic()
    await create_topics(kafka, [topic])
    texts = [
        "plain ascii",
        "héllo wörld — ünïcödé ✓ 日本語 🚀",
        json.dumps({"order": 42, "items": ["ß", "€"], "nested": {"ok": True}}, ensure_ascii=False),
        json.dumps({"escaped": '\u00e9\n\t"quoted"'}),
        "",
    ]
    async with running_server(broker=kafka.url) as running:
        stream = await open_stream(running, [topic])
        await produce(kafka, topic, [text.encode() for text in texts])
        for event_id, text in enumerate(texts, start=1):
            frame = await stream.data_frame()
            assert_message(frame, event_id, topic, text)
            assert frame.payload.encode() == text.encode()


async def test_subscribe_starts_after_what_is_already_in_the_topic(kafka: TansuServer) -> None:
    topic = new_topic()
    await create_topics(kafka, [topic], partitions=2)
    await produce(kafka, topic, [b"old 0", b"old 1"], partition=0)
    await produce(kafka, topic, [b"old 2"], partition=1)
    driver = KafkaBroker(kafka.url)
    await driver.connect()
    try:
        got = Collector()
        await driver.subscribe(topic, got.on_message, got.on_error)
        await produce(kafka, topic, [b"new 1"], partition=1)
        await produce(kafka, topic, [b"new 0"], partition=0)
        await got.wait_for(2)
        await asyncio.sleep(0.2)
        assert sorted(got.bodies) == [b"new 0", b"new 1"]
    finally:
        await driver.close()


# --- several service instances --------------------------------------------------------------------


async def test_two_instances_both_deliver_every_message(kafka: TansuServer) -> None:
    topic = new_topic()
    await create_topics(kafka, [topic])
    async with (
        running_server(broker=kafka.url) as first,
        running_server(broker=kafka.url) as second,
    ):
        streams = [await open_stream(first, [topic]), await open_stream(second, [topic])]
        await produce(kafka, topic, [b"one", b"two", b"three"])
        for stream in streams:
            frames = await stream.messages(3)
            assert [(f.id, f.topic, f.payload) for f in frames] == [
                ("1", topic, "one"),
                ("2", topic, "two"),
                ("3", topic, "three"),
            ]


async def test_publish_on_one_instance_reaches_a_stream_on_the_other(kafka: TansuServer) -> None:
    topic = new_topic()  # does not exist: the first publish creates it
    async with (
        running_server(broker=kafka.url) as publisher,
        running_server(broker=kafka.url) as reader,
    ):
        stream = await open_stream(reader, [topic])
        for i in range(5):
            await publisher.publish(topic, f"über {i}")
        frames = await stream.messages(5)
        assert [(f.id, f.payload) for f in frames] == [(str(i + 1), f"über {i}") for i in range(5)]
        assert {f.topic for f in frames} == {topic}
        assert await metric(reader, "unifrost_broker_errors_total") == 0


# --- topics and partitions that appear later ----------------------------------------------------


async def test_a_topic_created_after_subscribing_is_read_from_its_beginning(
    kafka: TansuServer,
) -> None:
    topic = new_topic()
    async with running_server(broker=kafka.url) as running:
        stream = await open_stream(running, [topic])
        # Nothing to read yet, and nothing reported: no error frame, only silence.
        with pytest.raises(TimeoutError):
            await stream.data_frame(timeout=0.3)
        await create_topics(kafka, [topic], partitions=2)
        await produce(kafka, topic, [b"p0 first", b"p0 second"], partition=0)
        await produce(kafka, topic, [b"p1 only"], partition=1)
        frames = await stream.messages(3)
        payloads = [f.payload for f in frames]
        assert sorted(payloads) == ["p0 first", "p0 second", "p1 only"]
        assert payloads.index("p0 first") < payloads.index("p0 second")  # partition order


async def test_partitions_that_appear_later_are_read_from_their_beginning(
    kafka: TansuServer,
) -> None:
    """tansu cannot add partitions, so the topic is re-created with more: the
    driver sees new partitions (or, if it looks in between, the topic vanish and
    return) and reads them from their beginning either way."""
    topic = new_topic()
    await create_topics(kafka, [topic], partitions=1)
    driver = KafkaBroker(kafka.url, health_interval=0.1, refresh_interval=0.2)
    await driver.connect()
    try:
        got = Collector()
        await driver.subscribe(topic, got.on_message, got.on_error)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.address)
        await admin.start()
        try:
            await admin.delete_topics([topic])
            await admin.create_topics([NewTopic(topic, 3, 1)])
        finally:
            await admin.close()
        partitions = await partitions_of(kafka, topic)
        assert len(partitions) > 1  # 3, or the client's auto-created default
        for partition in partitions:
            await produce(kafka, topic, [b"to %d" % partition], partition=partition)
        await got.wait_for(len(partitions))
        await asyncio.sleep(0.3)
        assert sorted(got.bodies) == sorted(b"to %d" % p for p in partitions)
        assert got.errors == []
    finally:
        await driver.close()


# --- one consumer for many topics -----------------------------------------------------------------


async def test_many_topics_on_one_driver(kafka: TansuServer) -> None:
    topics = [new_topic() for _ in range(40)]
    await create_topics(kafka, topics, partitions=2)
    driver = KafkaBroker(kafka.url)
    await driver.connect()
    try:
        collectors = {topic: Collector() for topic in topics}
        await asyncio.gather(
            *(driver.subscribe(t, c.on_message, c.on_error) for t, c in collectors.items())
        )
        async with native_producer(kafka) as producer:
            for topic in topics:
                await producer.send_and_wait(topic, topic.encode())
        for topic, collector in collectors.items():
            assert await collector.wait_for(1) == [(topic, topic.encode())]
    finally:
        await driver.close()


async def test_positions_survive_other_topics_coming_and_going(kafka: TansuServer) -> None:
    """Every (re)assignment of the shared consumer must keep the position of
    topics already read: no message of the steady topic is lost or repeated."""
    steady, others = new_topic(), [new_topic() for _ in range(6)]
    await create_topics(kafka, [steady, *others[:3]], partitions=2)  # others[3:] never exist
    driver = KafkaBroker(kafka.url, health_interval=0.05)
    await driver.connect()
    try:
        got = Collector()
        await driver.subscribe(steady, got.on_message, got.on_error)
        expected = [b"steady %d" % i for i in range(60)]

        async def publish_steadily() -> None:
            async with native_producer(kafka) as producer:
                for body in expected:
                    await producer.send_and_wait(steady, body, partition=0)
                    await asyncio.sleep(0.005)

        async def churn() -> None:
            for round_ in range(4):
                noise = Collector()
                subs = [await driver.subscribe(t, noise.on_message, noise.on_error) for t in others]
                await asyncio.sleep(0.06)  # let a health tick drop what was left
                for sub in subs[round_ % 2 :: 2]:
                    await sub.unsubscribe()
                await asyncio.sleep(0.06)
                for sub in subs:
                    await sub.unsubscribe()

        await asyncio.gather(publish_steadily(), churn())
        await got.wait_for(len(expected))
        await asyncio.sleep(0.2)
        assert got.bodies == expected
        assert got.errors == []
    finally:
        await driver.close()


# --- names Kafka refuses --------------------------------------------------------------------------


BAD_TOPICS = ["a/b", "with space", "x" * 250, "news.*", "*", ".", "..", "ünï"]


@pytest.mark.parametrize("topic", BAD_TOPICS)
async def test_invalid_topic_names_are_refused_by_the_driver(
    kafka: TansuServer, topic: str
) -> None:
    driver = KafkaBroker(kafka.url)
    await driver.connect()
    try:
        got = Collector()
        with pytest.raises(BrokerError) as refused:
            await driver.subscribe(topic, got.on_message, got.on_error)
        assert not isinstance(refused.value, BrokerUnavailable)
        assert str(refused.value) == topic_problem(topic)
        assert "Kafka topic name" in str(refused.value)
        with pytest.raises(BrokerError) as refused_publish:
            await driver.publish(topic, b"never")
        assert str(refused_publish.value) == topic_problem(topic)
        assert driver.is_up is True
    finally:
        await driver.close()


@pytest.mark.parametrize(
    ("begin", "end", "known", "current", "start"),
    [
        (0, 7, None, None, 0),  # a new partition: everything in it is new to us
        (3, 9, 5, 5, 5),  # our position is still inside: carry on
        (3, 9, 9, 9, 9),  # at the end: carry on
        (0, 2, 5, 5, 0),  # past the end: the broker lost it, read what is there now
        (0, 2, 5, 1, 1),  # ... unless the consumer already restarted it itself
        (4, 9, 2, 2, 4),  # retention deleted what we had not read yet
    ],
)
def test_where_a_returning_or_checked_partition_is_read_from(
    begin: int, end: int, known: int | None, current: int | None, start: int
) -> None:
    assert KafkaBroker._start_of(begin, end, known, current) == start


def test_topic_problems_name_the_rule() -> None:
    assert topic_problem("orders.eu-west_1") is None
    assert topic_problem("x" * 249) is None
    assert topic_problem("x" * 250) == "a Kafka topic name has at most 249 characters (got 250)"
    assert topic_problem("a/b c") == (
        "invalid Kafka topic name: ' ', '/' not allowed "
        "(use letters, digits, '.', '_' and '-'; Kafka has no wildcards)"
    )
    assert topic_problem("..") == "'..' is not a valid Kafka topic name"


async def test_invalid_topics_fail_alone_over_the_api(kafka: TansuServer) -> None:
    good = new_topic()
    await create_topics(kafka, [good])
    async with running_server(broker=kafka.url) as running:
        consumer_id = await running.create_consumer([good])
        stream = await running.stream(consumer_id)
        await stream.opening()
        response = await running.api(
            "POST", f"/consumers/{consumer_id}/subscriptions", {"add": ["a/b", "news.*", "y" * 250]}
        )
        assert response.status == 200, response.text
        body = response.json()
        assert body["subscriptions"] == [good]
        assert [(e["topic"], e["code"]) for e in body["errors"]] == [
            ("a/b", "subscription-failure"),
            ("news.*", "subscription-failure"),
            ("y" * 250, "subscription-failure"),
        ]
        assert body["errors"][0]["message"] == topic_problem("a/b")
        assert body["errors"][2]["message"] == topic_problem("y" * 250)
        refused = await running.api("POST", "/publish?topic=a/b", "x")
        assert refused.status == 502
        assert refused.json()["error"]["message"] == topic_problem("a/b")
        # Nothing else broke: the good topic still flows, the broker is up.
        await running.publish(good, "still here")
        assert_message(await stream.data_frame(), 1, good, "still here")
        assert (await running.public_api("GET", "/readyz")).status == 200


# --- outages --------------------------------------------------------------------------------------


async def test_broker_restart_is_survived_on_the_same_stream(own_kafka: TansuServer) -> None:
    topic = new_topic()
    await create_topics(own_kafka, [topic])
    async with running_server(broker=own_kafka.url) as running:
        stream = await open_stream(running, [topic])
        for i in range(3):
            await running.publish(topic, f"before {i}")
        for i in range(3):
            assert_message(await stream.data_frame(), i + 1, topic, f"before {i}")

        own_kafka.stop()
        await assert_outage_seen(running, stream, topic)

        own_kafka.start()  # same port, empty storage
        await assert_recovery_seen(running, stream)
        # The topic died with the broker (memory storage); re-create it. Its offsets
        # restart at 0, below our old position 3: the driver reads it from the start.
        # (tansu would also take the publish without the topic, but not list it.)
        await create_topics(own_kafka, [topic])  # reports, never raises, "already exists"
        await running.publish(topic, "after")
        assert_message(await stream.data_frame(), 4, topic, "after")
        assert await metric(running, "unifrost_broker_reconnects_total") == 1


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def broker_down(self, reason: str) -> None:
        self.calls.append(("down", reason))

    def broker_up(self, reconnected: bool) -> None:
        self.calls.append(("up", reconnected))

    def broker_error(self, message: str) -> None:
        self.calls.append(("error", message))

    def messages_dropped(self, topic: str, count: int, reason: str) -> None:
        self.calls.append(("dropped", topic))


async def test_while_the_broker_is_gone_calls_fail_fast_and_close_does_not_hang(
    own_kafka: TansuServer,
) -> None:
    driver = KafkaBroker(own_kafka.url, health_interval=0.1)
    listener = Listener()
    driver.set_listener(listener)
    await driver.connect()
    topic = new_topic()
    got = Collector()
    await driver.subscribe(topic, got.on_message, got.on_error)
    await driver.publish(topic, b"queued for nobody")  # creates the topic

    own_kafka.stop()
    deadline = time.monotonic() + 5
    while driver.is_up and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert driver.is_up is False
    assert listener.calls[0] == ("up", False)
    kind, reason = listener.calls[1]
    assert kind == "down"
    assert isinstance(reason, str) and "is unreachable" in reason
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await driver.publish(topic, b"lost")
    with pytest.raises(BrokerUnavailable):
        await driver.subscribe(new_topic(), got.on_message, got.on_error)
    assert time.monotonic() - started < 0.5
    await asyncio.sleep(0.5)  # a few reconnect attempts, each reported, none marking up
    assert {call[0] for call in listener.calls[2:]} <= {"error"}
    started = time.monotonic()
    await driver.close()
    assert time.monotonic() - started < 3
    assert driver.is_up is False
    assert got.errors == []


async def test_connect_fails_fast_and_names_no_password() -> None:
    password = f"pw-{uuid.uuid4().hex}"
    url = f"kafka://relay:{password}@127.0.0.1:{free_port()}"
    driver = KafkaBroker(url, SASL)
    assert password not in driver.describe()
    assert "relay" not in driver.describe()
    with captured_logs() as logs:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as failed:
            async with running_server(driver=driver):
                pass
        assert time.monotonic() - started < 6
    message = str(failed.value)
    assert message.startswith("cannot connect to Kafka at kafka://***@127.0.0.1:")
    assert "no bootstrap server answered" in message
    assert password not in message
    assert password not in logs.getvalue()
    assert driver.is_up is False
    await driver.close()


def test_serve_exits_1_with_one_line_when_kafka_is_unreachable() -> None:
    url = f"kafka://127.0.0.1:{free_port()}"
    result = run(
        ["serve", "--broker", url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    )
    assert result.returncode == 1
    [line] = problem_lines(result)
    assert line.startswith(f"unifrost: cannot start: cannot connect to Kafka at {url}: ")


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://k1:9092", ["k1:9092"]),
        ("kafka://k1", ["k1:9092"]),
        ("kafka://k1:9093,k2,10.0.0.7:19092/", ["k1:9093", "k2:9092", "10.0.0.7:19092"]),
        ("kafka://[::1]:9094,[fe80::1]", ["[::1]:9094", "[fe80::1]:9092"]),
        ("KAFKA://k1:1", ["k1:1"]),
    ],
)
def test_bootstrap_servers_from_the_url(url: str, servers: list[str]) -> None:
    driver = open_broker(url, Settings())
    assert isinstance(driver, KafkaBroker)
    assert list(driver._options.bootstrap) == servers
    assert driver.describe() == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("kafka://", "invalid Kafka bootstrap server ''"),
        ("kafka://k1:0", "invalid port in Kafka bootstrap server 'k1:0'"),
        ("kafka://k1:99999", "invalid port in Kafka bootstrap server 'k1:99999'"),
        ("kafka://k1:abc", "invalid port in Kafka bootstrap server 'k1:abc'"),
        ("kafka://k1,,k2", "invalid Kafka bootstrap server ''"),
        ("kafka://k1/topic", "a kafka:// URL has no path or query"),
        ("kafka://k1?x=1", "a kafka:// URL has no path or query"),
        ("kafka://[::1", "invalid kafka:// URL"),
        ("kafka://u:pw@[::1", "invalid kafka:// URL (use kafka://host:port,...): kafka://***@[::1"),
    ],
)
def test_bad_urls_are_config_errors(url: str, expected: str) -> None:
    with pytest.raises(ValueError) as refused:
        open_broker(url, Settings())
    assert str(refused.value).startswith(expected)


def test_url_credentials_are_sasl_credentials() -> None:
    driver = KafkaBroker("kafka://re%40lay:p%3Ass@k1:9092", SASL)
    assert (driver._options.username, driver._options.password) == ("re@lay", "p:ss")
    keys = Settings(
        kafka=KafkaSettings(
            security_protocol="SASL_SSL", sasl_username="svc", sasl_password="from-keys"
        )
    )
    driver = KafkaBroker("kafka://url-user:url-pass@k1:9092", keys)
    assert (driver._options.username, driver._options.password) == ("svc", "from-keys")


@pytest.mark.parametrize(
    ("url", "kafka_settings", "expected"),
    [
        (
            "kafka://relay:secret-pw@k1",
            KafkaSettings(),
            "SASL credentials are set but kafka.security_protocol PLAINTEXT does not use them",
        ),
        (
            "kafka://k1",
            KafkaSettings(security_protocol="SASL_SSL"),
            "kafka.security_protocol SASL_SSL needs kafka.sasl_username and kafka.sasl_password",
        ),
        (
            "kafka://k1",
            KafkaSettings(security_protocol="SSL", sasl_username="u", sasl_password="secret-pw"),
            "SASL credentials are set but kafka.security_protocol SSL does not use them",
        ),
        (
            "kafka://k1",
            KafkaSettings(ssl_cafile="/etc/hosts"),
            "kafka.ssl_cafile set but kafka.security_protocol PLAINTEXT does not use TLS",
        ),
        (
            "kafka://k1",
            KafkaSettings(security_protocol="SSL", ssl_keyfile="/etc/hosts"),
            "kafka.ssl_keyfile needs kafka.ssl_certfile",
        ),
    ],
)
def test_security_settings_that_cannot_work_are_config_errors(
    url: str, kafka_settings: KafkaSettings, expected: str
) -> None:
    with pytest.raises(ValueError) as refused:
        open_broker(url, Settings(kafka=kafka_settings))
    assert str(refused.value).startswith(expected)
    assert "secret-pw" not in str(refused.value)


async def test_unreadable_tls_files_fail_connect_with_a_clear_error(tmp_path: Path) -> None:
    cafile = tmp_path / "ca.pem"
    cafile.write_text("not a certificate\n", encoding="utf-8")
    settings = Settings(kafka=KafkaSettings(security_protocol="SSL", ssl_cafile=str(cafile)))
    driver = KafkaBroker(f"kafka://127.0.0.1:{free_port()}", settings)
    with pytest.raises(BrokerError) as failed:
        await driver.connect()
    assert str(failed.value).startswith("cannot load the Kafka TLS files:")
    await driver.close()
