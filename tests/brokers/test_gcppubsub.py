"""The Google Cloud Pub/Sub driver against pstest, Google's fake Pub/Sub server.

pstest (``tests/brokers/pstest/main.go``, built by ``scripts/ensure-pstest.sh``)
speaks the real Pub/Sub gRPC API without credentials, like the official
emulator. Most tests share one server for the module; tests that restart it
start their own on a free port (``tests/brokers/pstest_server.py``). Messages
published "natively" go through google-cloud-pubsub's own client, as another
application would send them.

pstest answers a pull that finds nothing only after 500 ms, so a delivery to an
idle subscription takes up to that long here (real Pub/Sub answers at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.pubsub_v1 import (
    PublisherAsyncClient,
    PublisherClient,
    SubscriberAsyncClient,
)
from google.pubsub_v1.services.publisher.transports import (
    PublisherGrpcAsyncIOTransport,
    PublisherGrpcTransport,
)
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport
from google.pubsub_v1.types import PubsubMessage

from service.brokers import open_broker
from service.brokers.base import Broker, BrokerError, BrokerUnavailable
from service.brokers.gcppubsub import GcpPubSubBroker
from service.brokers.gcppubsub_config import check_topic, parse_url
from service.config import Settings
from tests.brokers.contract import BrokerContract, Collector
from tests.brokers.pstest_server import (
    PROJECT,
    PstestServer,
    ensure_built,
    free_port,
    pstest_server,
)
from tests.brokers.streams import (
    assert_message,
    assert_outage_seen,
    assert_recovery_seen,
    open_stream,
)
from tests.support import captured_logs, metric, running_server, wait_for

_shared: dict[str, PstestServer] = {}


@pytest.fixture(scope="module", autouse=True)
def shared_pstest() -> Iterator[PstestServer]:
    ensure_built()
    server = PstestServer(free_port())
    try:
        asyncio.run(server.start())
        _shared["server"] = server
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _no_emulator_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their emulator in the URL unless they set the variable themselves."""
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)


def shared() -> PstestServer:
    return _shared["server"]


def driver(server: PstestServer | None = None, **options: str) -> GcpPubSubBroker:
    return GcpPubSubBroker.from_url((server or shared()).url(**options), Settings())


def create_topic(server: PstestServer | None = None, name: str | None = None) -> str:
    """A new topic on the server (blocking: also used from the contract's sync hook)."""
    server = server or shared()
    name = name or f"t-{uuid.uuid4().hex[:16]}"
    channel = grpc.insecure_channel(server.host)
    try:
        client = PublisherClient(transport=PublisherGrpcTransport(channel=channel))
        client.create_topic(name=server.topic_path(name), timeout=5)
    finally:
        channel.close()
    return name


@contextlib.asynccontextmanager
async def native(
    server: PstestServer | None = None,
) -> AsyncIterator[tuple[PublisherAsyncClient, SubscriberAsyncClient]]:
    """google-cloud-pubsub's own asyncio clients on the emulator, as another application."""
    channel = grpc.aio.insecure_channel((server or shared()).host)
    try:
        yield (
            PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=channel)),
            SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=channel)),
        )
    finally:
        await channel.close()


async def publish_natively(publisher: PublisherAsyncClient, topic: str, body: bytes) -> str:
    """Publish one message; returns its message id."""
    response = await publisher.publish(
        topic=shared().topic_path(topic), messages=[PubsubMessage(data=body)], timeout=5
    )
    return str(response.message_ids[0])


async def subscriptions_of(publisher: PublisherAsyncClient, topic: str) -> list[str]:
    pager = await publisher.list_topic_subscriptions(topic=shared().topic_path(topic), timeout=5)
    return sorted([name async for name in pager])


def instance_prefix() -> str:
    """What this process's subscription names start with (before the random part)."""
    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-")[:40]
    return f"projects/{PROJECT}/subscriptions/unifrost-{host}-{os.getpid()}-"


# --- the shared contract --------------------------------------------------------------------------


class TestGcpPubSubContract(BrokerContract):
    async def make_broker(self) -> Broker:
        return driver()

    def broker_from_url(self, url: str) -> Broker:
        return GcpPubSubBroker.from_url(url, Settings())

    def url_with_password(self, password: str) -> str:
        return f"gcppubsub://user:{password}@{PROJECT}"

    def topic(self) -> str:
        return create_topic()  # Pub/Sub topics must exist before use

    # Google credentials never travel in a URL: one that carries a password is
    # refused, and the refusal does not repeat it.
    async def test_describe_hides_the_password(self) -> None:
        password = f"s3cret-{uuid.uuid4().hex}"
        url = self.url_with_password(password)
        with pytest.raises(ValueError, match="takes no credentials") as caught:
            open_broker(url)
        assert password not in str(caught.value)
        plain = await self.make_broker()
        self._drivers.append(plain)
        assert plain.describe() == f"gcppubsub://{PROJECT}?emulator_host={shared().host}"


# --- URLs and topic names -------------------------------------------------------------------------


def test_url_forms() -> None:
    plain = parse_url("gcppubsub://my-project")
    assert (plain.project, plain.emulator_host, plain.ack_deadline_seconds) == (
        "my-project",
        None,
        10,
    )
    assert (plain.expiration_days, plain.max_messages, plain.timeout) == (1, 500, 10.0)
    full = parse_url(
        "gcppubsub://example.com:my-project/?emulator_host=localhost:8085"
        "&ack_deadline_seconds=30&expiration_days=7&max_messages=1000&timeout=2.5"
        "&max_reconnect_wait=0.5"
    )
    assert (full.project, full.emulator_host) == ("example.com:my-project", "localhost:8085")
    assert (full.ack_deadline_seconds, full.expiration_days, full.max_messages) == (30, 7, 1000)
    assert (full.timeout, full.max_reconnect_wait) == (2.5, 0.5)
    assert full.subscription_path("s") == "projects/example.com:my-project/subscriptions/s"
    assert GcpPubSubBroker(plain).describe() == "gcppubsub://my-project"
    assert GcpPubSubBroker(full).describe() == (
        "gcppubsub://example.com:my-project?emulator_host=localhost:8085"
    )


def test_the_emulator_variable_is_read_and_the_url_option_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9999")
    assert parse_url("gcppubsub://my-project").emulator_host == "127.0.0.1:9999"
    assert parse_url("gcppubsub://my-project?emulator_host=h:1").emulator_host == "h:1"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("gcppubsub://svc:hunter2@my-project", "takes no credentials"),
        ("gcppubsub://:hunter2@my-project", "takes no credentials"),
        ("gcppubsub://", "not a Google Cloud project id"),
        ("gcppubsub://My_Project", "not a Google Cloud project id"),
        ("gcppubsub://my-project/topics/a", "takes no path"),
        ("gcppubsub://my-project?topic=a", "unknown gcppubsub URL option 'topic'"),
        ("gcppubsub://my-project?ack_deadline_seconds=5", "from 10 to 600"),
        ("gcppubsub://my-project?expiration_days=0", "from 1 to 31"),
        ("gcppubsub://my-project?max_messages=1001", "from 1 to 1000"),
        ("gcppubsub://my-project?timeout=0", "option timeout: must be more than zero"),
        ("gcppubsub://my-project?emulator_host=nohost", "is not host:port"),
    ],
)
def test_bad_urls_are_config_errors_without_credentials(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        open_broker(url)
    assert "hunter2" not in str(caught.value)


def test_check_config_refuses_a_url_with_a_secret_without_printing_it() -> None:
    secret = uuid.uuid4().hex
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--check-config"],
        env={**os.environ, "UNIFROST_BROKER": f"gcppubsub://svc:{secret}@my-project"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert "takes no credentials" in result.stderr
    assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize("topic", ["orders.*", "orders.>", "orders/#", "a?", "[ab]"])
def test_wildcards_are_refused(topic: str) -> None:
    with pytest.raises(BrokerError, match="Pub/Sub has no wildcard subscriptions"):
        check_topic(topic)


@pytest.mark.parametrize("topic", ["ab", "1abc", "goog-topic", "sp ace", "a/b", "é" * 4, "a" * 256])
def test_invalid_topic_names(topic: str) -> None:
    with pytest.raises(BrokerError, match="invalid Pub/Sub topic name"):
        check_topic(topic)


def test_valid_topic_names() -> None:
    for topic in ("abc", "orders.eu-west_1~x+y%20", "A" * 255):
        check_topic(topic)


async def test_unreachable_emulator_fails_connect_quickly() -> None:
    broker = GcpPubSubBroker.from_url(
        f"gcppubsub://{PROJECT}?emulator_host=127.0.0.1:{free_port()}&timeout=2", Settings()
    )
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="cannot connect to gcppubsub://"):
        await broker.connect()
    assert time.monotonic() - started < 3
    assert broker.is_up is False
    await asyncio.wait_for(broker.close(), 2)


async def test_the_emulator_variable_reaches_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", shared().host)
    broker = GcpPubSubBroker.from_url(f"gcppubsub://{PROJECT}", Settings())
    await broker.connect()
    try:
        topic, got = create_topic(), Collector()
        await broker.subscribe(topic, got.on_message, got.on_error)
        await broker.publish(topic, b"via PUBSUB_EMULATOR_HOST")
        assert await got.wait_for(1) == [(topic, b"via PUBSUB_EMULATOR_HOST")]
    finally:
        await broker.close()


# --- through the service --------------------------------------------------------------------------


async def test_natively_published_messages_arrive_with_exact_bytes() -> None:
    topic = create_topic()
    texts = ["héllo wörld — ✓ 🚀 日本語", json.dumps({"user": "zoë", "n": [1, None, 2.5]})]
    binary = [bytes(range(256)), b"\xff\xfe not utf-8 \xc3\x28", b"\x00"]
    bodies = [t.encode() for t in texts] + binary
    direct, got = driver(), Collector()
    await direct.connect()
    try:
        await direct.subscribe(topic, got.on_message, got.on_error)
        async with running_server(driver=driver()) as running, native() as (publisher, _):
            stream = await open_stream(running, [topic])
            for body in bodies:
                await publish_natively(publisher, topic, body)
            frames = await stream.messages(len(bodies))
            # The driver hands over the exact bytes; SSE carries them as UTF-8 text.
            assert await got.wait_for(len(bodies)) == [(topic, body) for body in bodies]
            for event_id, (frame, body) in enumerate(zip(frames, bodies, strict=True), 1):
                assert_message(frame, event_id, topic, body.decode("utf-8", "replace"))
            assert json.loads(frames[1].payload)["user"] == "zoë"
    finally:
        await direct.close()


async def test_two_instances_each_have_a_subscription_and_deliver_every_message() -> None:
    topic = create_topic()
    async with (
        running_server(driver=driver()) as first,
        running_server(driver=driver()) as second,
        native() as (publisher, _),
    ):
        first_stream = await open_stream(first, [topic])
        second_stream = await open_stream(second, [topic])
        names = await subscriptions_of(publisher, topic)
        assert len(names) == 2
        # "<instance prefix><n>-<topic>": one subscription per instance.
        prefixes = {r.broker.names.prefix for r in (first, second)}
        assert {n.rsplit("/", 1)[1].removesuffix(f"1-{topic}") for n in names} == prefixes
        for i in range(5):
            await publish_natively(publisher, topic, b"fan-out %d" % i)
        for stream in (first_stream, second_stream):
            for i, frame in enumerate(await stream.messages(5)):
                assert_message(frame, i + 1, topic, f"fan-out {i}")


async def test_publish_api_goes_through_pubsub_to_a_stream() -> None:
    topic = create_topic()
    async with (
        running_server(driver=driver()) as publisher,
        running_server(driver=driver()) as reader,
    ):
        stream = await open_stream(reader, [topic])
        await publisher.publish(topic, "across instances ✓")
        await publisher.publish(topic, "second")
        assert_message(await stream.data_frame(), 1, topic, "across instances ✓")
        assert_message(await stream.data_frame(), 2, topic, "second")
        assert await metric(publisher, "unifrost_messages_received_total") == 0


async def test_missing_topics_and_wildcards_are_refused_clearly() -> None:
    good = create_topic()
    async with running_server(driver=driver()) as running:
        consumer_id = await running.create_consumer([])
        response = await running.api(
            "POST",
            f"/consumers/{consumer_id}/subscriptions",
            {"add": ["no-such-topic", "orders.*", good], "remove": []},
        )
        result = response.json()
        assert result["subscriptions"] == [good]
        errors = {e["topic"]: (e["code"], e["message"]) for e in result["errors"]}
        assert errors["no-such-topic"] == (
            "subscription-failure",
            f"no such Pub/Sub topic: 'no-such-topic' in project '{PROJECT}'",
        )
        assert errors["orders.*"][0] == "subscription-failure"
        assert "no wildcard" in errors["orders.*"][1]
        response = await running.api("POST", "/publish?topic=no-such-topic", "x")
        assert response.status == 502
        assert response.json()["error"]["message"] == (
            f"no such Pub/Sub topic: 'no-such-topic' in project '{PROJECT}'"
        )
        assert running.broker.is_up is True
        async with native() as (publisher, _):
            assert await subscriptions_of(publisher, good) != []


# --- subscriptions on the server ------------------------------------------------------------------


async def test_subscriptions_are_named_for_the_instance_configured_and_deleted() -> None:
    first, second = create_topic(), create_topic()
    broker = driver(ack_deadline_seconds="20", expiration_days="2")
    await broker.connect()
    closed = False
    try:
        sub_first = await broker.subscribe(first, Collector().on_message, Collector().on_error)
        await broker.subscribe(second, Collector().on_message, Collector().on_error)
        async with native() as (publisher, subscriber):
            (name,) = await subscriptions_of(publisher, first)
            assert name.startswith(instance_prefix())
            assert name.startswith(
                f"projects/{PROJECT}/subscriptions/unifrost-{broker.names.instance}-"
            )
            assert name.endswith(f"-{first}")
            config = await subscriber.get_subscription(subscription=name, timeout=5)
            assert config.topic == shared().topic_path(first)
            assert config.ack_deadline_seconds == 20
            assert config.expiration_policy.ttl.total_seconds() == 2 * 86_400
            assert config.message_retention_duration.total_seconds() == 600
            assert config.enable_message_ordering is True

            await sub_first.unsubscribe()
            assert await subscriptions_of(publisher, first) == []
            assert len(await subscriptions_of(publisher, second)) == 1
            await broker.close()
            closed = True
            assert await subscriptions_of(publisher, second) == []
    finally:
        if not closed:
            await broker.close()


async def test_long_topic_names_still_make_valid_unique_subscription_names() -> None:
    topic = create_topic(name="t" + "x" * 250)
    broker = driver()
    await broker.connect()
    try:
        got = Collector()
        await broker.subscribe(topic, got.on_message, got.on_error)
        await broker.subscribe(topic, got.on_message, got.on_error)
        async with native() as (publisher, _):
            names = await subscriptions_of(publisher, topic)
        assert len(names) == 2
        assert all(len(n.rsplit("/", 1)[1]) == 255 for n in names)
        await broker.publish(topic, b"twice")
        assert await got.wait_for(2) == [(topic, b"twice"), (topic, b"twice")]
    finally:
        await broker.close()


async def test_a_subscription_deleted_behind_its_back_is_created_again() -> None:
    topic = create_topic()
    broker = driver()
    await broker.connect()
    try:
        got = Collector()
        await broker.subscribe(topic, got.on_message, got.on_error)
        async with native() as (publisher, subscriber):
            (name,) = await subscriptions_of(publisher, topic)
            await subscriber.delete_subscription(subscription=name, timeout=5)

            async def recreated() -> bool:
                return await subscriptions_of(publisher, topic) == [name]

            await wait_for(recreated, timeout=5)
            await publish_natively(publisher, topic, b"still here")
        assert await got.wait_for(1) == [(topic, b"still here")]
        assert got.errors == []
        assert broker.is_up is True
    finally:
        await broker.close()


async def test_messages_are_acked_after_fan_out_and_not_redelivered() -> None:
    topic = create_topic()
    broker = driver()
    await broker.connect()
    try:
        got = Collector()
        await broker.subscribe(topic, got.on_message, got.on_error)
        async with native() as (publisher, subscriber):
            (name,) = await subscriptions_of(publisher, topic)
            # pstest's ack id is the message id: "nack" (deadline 0) puts a message
            # that was not acked back for delivery, and does nothing to an acked one.
            first_id = await publish_natively(publisher, topic, b"first")
            await got.wait_for(1)
            # The loop acks a batch before it pulls again: a later message
            # arriving proves the first one's ack went through.
            await publish_natively(publisher, topic, b"second")
            await got.wait_for(2)
            await subscriber.modify_ack_deadline(
                subscription=name, ack_ids=[first_id], ack_deadline_seconds=0, timeout=5
            )
            await publish_natively(publisher, topic, b"third")
            await got.wait_for(3)
            await asyncio.sleep(0.7)  # one more empty pull of pstest's
            assert got.bodies == [b"first", b"second", b"third"]

            # The same nack on a message nobody acked brings it back: the check above can fail.
            control = f"control-{uuid.uuid4().hex[:8]}"
            control_path = f"projects/{PROJECT}/subscriptions/{control}"
            await subscriber.create_subscription(
                name=control_path,
                topic=shared().topic_path(topic),
                ack_deadline_seconds=10,
                timeout=5,
            )
            message_id = await publish_natively(publisher, topic, b"unacked")
            pulled = await subscriber.pull(subscription=control_path, max_messages=10, timeout=5)
            assert [m.ack_id for m in pulled.received_messages] == [message_id]
            await subscriber.modify_ack_deadline(
                subscription=control_path, ack_ids=[message_id], ack_deadline_seconds=0, timeout=5
            )
            again = await subscriber.pull(subscription=control_path, max_messages=10, timeout=5)
            assert [m.message.data for m in again.received_messages] == [b"unacked"]
            await subscriber.delete_subscription(subscription=control_path, timeout=5)
    finally:
        await broker.close()


# --- outages --------------------------------------------------------------------------------------


async def test_emulator_restart_is_survived_on_the_same_stream() -> None:
    async with pstest_server() as server:
        topic = create_topic(server)
        server.topics.append(server.topic_path(topic))  # pstest forgets it on restart
        broker = driver(server, max_reconnect_wait="0.3")
        with captured_logs() as logs:
            async with running_server(driver=broker) as running:
                stream = await open_stream(running, [topic])
                await running.publish(topic, "before")
                assert_message(await stream.data_frame(), 1, topic, "before")

                server.kill()
                await assert_outage_seen(running, stream, topic)
                with pytest.raises(BrokerUnavailable):
                    await broker.subscribe(
                        create_topic(), Collector().on_message, Collector().on_error
                    )

                await server.start()  # empty but for the topic: the subscription is gone
                await assert_recovery_seen(running, stream)
                await running.publish(topic, "after")
                assert_message(await stream.data_frame(), 2, topic, "after")
                async with native(server) as (publisher, _):
                    pager = await publisher.list_topic_subscriptions(
                        topic=server.topic_path(topic), timeout=5
                    )
                    assert [n async for n in pager] == [
                        f"projects/{PROJECT}/subscriptions/{broker.names.prefix}1-{topic}"
                    ]
    events = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    described = f"gcppubsub://{PROJECT}?emulator_host={server.host}"
    assert {"event": "broker.disconnected", "broker": described} in [
        {k: e.get(k) for k in ("event", "broker")} for e in events
    ]
    assert [e["broker"] for e in events if e["event"] == "server.started"] == [described]


async def test_close_while_the_emulator_is_gone_does_not_hang() -> None:
    async with pstest_server() as server:
        topic = create_topic(server)
        broker = driver(server, max_reconnect_wait="0.2", timeout="2")
        await broker.connect()
        got = Collector()
        await broker.subscribe(topic, got.on_message, got.on_error)
        server.kill()
        deadline = time.monotonic() + 5
        while broker.is_up:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        with pytest.raises(BrokerUnavailable):
            await broker.publish(topic, b"x")
        started = time.monotonic()
        await broker.close()
        assert time.monotonic() - started < 1
        assert got.errors == []
