"""The SQS driver against a private moto_server (in-memory AWS emulator).

Credentials: tests put dummy credentials in the URL (``sqs://testing:testing@?...``),
so nothing depends on the environment. SQS is competing consumers (each message
goes to one receiver), so contract tests that assume fan-out are replaced below by
tests of SQS's own semantics.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aiobotocore.session import get_session

from service.brokers.base import Broker, BrokerError, BrokerUnavailable
from service.brokers.sqs import SqsBroker, check_queue_name, parse_url
from service.config import Settings
from tests.brokers.contract import BrokerContract, Collector
from tests.brokers.local_server import free_port
from tests.brokers.moto_server import MotoServer, moto_server
from tests.brokers.streams import assert_message, error_code, open_stream
from tests.support import captured_logs, metric, running_server

_shared: dict[str, MotoServer] = {}


@pytest.fixture(scope="module", autouse=True)
def shared_moto() -> Iterator[MotoServer]:
    server = MotoServer(free_port())
    try:
        asyncio.run(server.start())
        _shared["server"] = server
        yield server
    finally:
        server.kill()
        server._log.close()


def shared() -> MotoServer:
    return _shared["server"]


def client(server: MotoServer) -> Any:
    return get_session().create_client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=server.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


async def create_queue(server: MotoServer, name: str | None = None) -> str:
    name = name or f"q-{uuid.uuid4().hex[:16]}"
    async with client(server) as sqs:
        await sqs.create_queue(QueueName=name)
    return name


def driver(server: MotoServer | None = None) -> SqsBroker:
    return SqsBroker.from_url((server or shared()).url(wait_time_seconds="1"), Settings())


# --- the shared contract -------------------------------------------------------------------------


class TestSqsContract(BrokerContract):
    # Base64 (for binary bodies) grows a body by a third against SQS's 256 KiB limit.
    large_body_size = 150 * 1024

    async def make_broker(self) -> Broker:
        return driver()

    def url_with_password(self, password: str) -> str:
        return f"sqs://AKIDEXAMPLE:{password}@?region=us-east-1"

    def broker_from_url(self, url: str) -> Broker:
        return SqsBroker.from_url(url, Settings())

    def topic(self) -> str:
        # A fresh queue: SQS queues must exist before use.
        name = f"contract-{uuid.uuid4().hex[:16]}"
        boto3.client(
            "sqs",
            region_name="us-east-1",
            endpoint_url=shared().endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_queue(QueueName=name)
        return name

    # SQS semantics replace the contract's fan-out: competing consumers, each message
    # is delivered exactly once across the instances subscribed to a queue.
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
        expected = [f"competing {i}".encode() for i in range(10)]
        for body in expected:
            await self.publish(publisher, topic, body)
        for _ in range(100):
            if len(got_first.bodies) + len(got_second.bodies) >= len(expected):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert sorted(got_first.bodies + got_second.bodies) == sorted(expected)

    # Competing consumers: a witness on the same queue would take messages from the
    # subscriber, so these two contract tests use one receiver per queue instead.
    async def test_unsubscribe_stops_delivery_and_is_idempotent(self) -> None:
        driver, publisher = await self.connected(), await self.connected()
        topic = self.topic()
        got = Collector()
        subscription = await self.subscribe(driver, topic, got)
        await self.publish(publisher, topic, b"before")
        await got.wait_for(1)
        await asyncio.wait_for(subscription.unsubscribe(), 5)
        await asyncio.wait_for(subscription.unsubscribe(), 5)
        await self.publish(publisher, topic, b"after")
        # The queue keeps "after" for the next receiver: a new subscription gets it.
        again = Collector()
        await self.subscribe(driver, topic, again)
        assert await again.wait_for(1) == [(topic, b"after")]
        await self.grace()
        assert got.messages == [(topic, b"before")]
        assert got.errors == []

    async def test_raising_callback_does_not_stop_delivery(self) -> None:
        driver, publisher = await self.connected(), await self.connected()
        topic, other_topic = self.topic(), self.topic()
        bad, other = Collector(raises=True), Collector()
        await self.subscribe(driver, topic, bad)
        await self.subscribe(driver, other_topic, other)
        for i in range(3):
            await self.publish(publisher, topic, b"t%d" % i)
            await self.publish(publisher, other_topic, b"o%d" % i)
        await bad.wait_for(3)
        await other.wait_for(3)
        await self.grace()
        assert bad.bodies == [b"t0", b"t1", b"t2"]
        assert bad.errors == []
        assert other.bodies == [b"o0", b"o1", b"o2"]
        assert driver.is_up is True


# --- through the service -------------------------------------------------------------------------


async def test_natively_sent_messages_arrive_with_exact_bytes() -> None:
    queue = await create_queue(shared())
    async with running_server(driver=driver()) as running:
        stream = await open_stream(running, [queue])
        payloads = ["héllo wörld — ✓ 🚀 日本語", json.dumps({"user": "zoë", "n": [1, None]})]
        async with client(shared()) as sqs:
            url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
            for payload in payloads:
                await sqs.send_message(QueueUrl=url, MessageBody=payload)
        frames = await stream.messages(2)
        assert sorted(f.payload for f in frames) == sorted(payloads)
        assert {f.topic for f in frames} == {queue}


async def test_publish_api_goes_through_sqs_to_a_stream() -> None:
    queue = await create_queue(shared())
    async with (
        running_server(driver=driver()) as publisher,
        running_server(driver=driver()) as reader,
    ):
        stream = await open_stream(reader, [queue])
        await publisher.publish(queue, "across instances ✓")
        assert_message(await stream.data_frame(), 1, queue, "across instances ✓")
        assert await metric(publisher, "unifrost_messages_received_total") == 0


async def test_missing_queue_is_a_subscription_failure() -> None:
    good = await create_queue(shared())
    async with running_server(driver=driver()) as running:
        consumer_id = await running.create_consumer([])
        response = await running.api(
            "POST",
            f"/consumers/{consumer_id}/subscriptions",
            {"add": ["no-such-queue-x", "bad name!", good], "remove": []},
        )
        result = response.json()
        assert result["subscriptions"] == [good]
        errors = {e["topic"]: (e["code"], e["message"]) for e in result["errors"]}
        assert errors["no-such-queue-x"] == (
            "subscription-failure",
            "no such queue: 'no-such-queue-x'",
        )
        assert errors["bad name!"][0] == "subscription-failure"
        assert running.broker.is_up is True


async def test_secret_never_in_describe_or_logs() -> None:
    secret = uuid.uuid4().hex
    url = shared().url().replace("testing:testing@", f"testing:{secret}@")
    broker = SqsBroker.from_url(url, Settings())
    assert secret not in broker.describe()
    assert broker.describe().startswith("sqs://***@")
    with captured_logs() as logs:
        async with running_server(driver=broker) as running:
            queue = await create_queue(shared())
            stream = await open_stream(running, [queue])
            await running.publish(queue, "x")
            await stream.data_frame()
    assert secret not in logs.getvalue()


async def test_restart_is_survived_on_the_same_stream() -> None:
    async with moto_server() as server:
        queue = await create_queue(server)
        url = server.url(wait_time_seconds="1", max_reconnect_wait="0.3")
        async with running_server(driver=SqsBroker.from_url(url, Settings())) as running:
            stream = await open_stream(running, [queue])
            await running.publish(queue, "before")
            assert_message(await stream.data_frame(), 1, queue, "before")
            server.kill()
            assert error_code(await stream.data_frame(timeout=10)) == "broker-unavailable"
            assert (await running.public_api("GET", "/readyz")).status == 503
            assert await metric(running, "unifrost_broker_up") == 0
            await server.start()
            await create_queue(server, queue)  # moto is in memory: the queue is gone
            assert error_code(await stream.data_frame(timeout=10)) == "broker-recovered"
            await running.publish(queue, "after")
            assert_message(await stream.data_frame(timeout=10), 2, queue, "after")
            assert await metric(running, "unifrost_broker_reconnects_total") == 1


# --- URLs and connecting -------------------------------------------------------------------------


def test_url_forms() -> None:
    plain = parse_url("sqs://")
    assert (plain.endpoint_url, plain.region, plain.access_key_id) == (None, None, None)
    assert plain.wait_time_seconds == 20
    full = parse_url(
        "sqs://AK:s%2Fcret@?endpoint_url=http://h:1&region=eu-west-1&wait_time_seconds=3"
    )
    assert (full.endpoint_url, full.region, full.wait_time_seconds) == (
        "http://h:1",
        "eu-west-1",
        3,
    )
    assert (full.access_key_id, full.secret_access_key) == ("AK", "s/cret")
    assert SqsBroker(full).describe() == "sqs://***@?endpoint_url=http://h:1&region=eu-west-1"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sqs://AK:hunter2@host", "no host or path"),
        ("sqs://?wait_time_seconds=21", "0-20"),
        ("sqs://AK:hunter2@?queue=x", "unknown SQS URL option 'queue'"),
    ],
)
def test_bad_urls(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_url(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("name", ["", "a" * 81, "a.b", "x.fifo.fifo", "sp ace"])
def test_invalid_queue_names(name: str) -> None:
    with pytest.raises(BrokerError, match="invalid SQS queue name"):
        check_queue_name(name)


async def test_unreachable_endpoint_fails_connect_quickly() -> None:
    broker = SqsBroker.from_url(
        f"sqs://testing:testing@?endpoint_url=http://127.0.0.1:{free_port()}&region=us-east-1",
        Settings(),
    )
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="cannot connect"):
        await broker.connect()
    assert time.monotonic() - started < 6
    assert broker.is_up is False
    await asyncio.wait_for(broker.close(), 2)
