"""The topic hub through the real server: one broker subscription per topic,
fan-out across instances, and broker trouble reaching the streams."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from service.brokers import MemoryBroker
from service.brokers.base import ErrorCallback, MessageCallback, Subscription
from tests.support import Frame, Running, SseClient, metric, running_server

# --- helpers --------------------------------------------------------------------------


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def bus_subscriptions(running: Running) -> dict[str, int]:
    """Broker-level subscriptions per topic, as the memory bus holds them."""
    return {topic: len(subs) for topic, subs in running.broker._bus.subscribers.items()}


def hub_topics(running: Running) -> list[str]:
    assert running.server.ctx is not None
    return list(running.server.ctx.hub.topics)


async def assert_broker_subscriptions(running: Running, expected: dict[str, int]) -> None:
    """The bus, the hub and the exported gauge agree on which topics are held."""
    assert bus_subscriptions(running) == expected
    assert hub_topics(running) == sorted(expected)
    assert await metric(running, "unifrost_broker_subscriptions") == len(expected)


async def open_stream(running: Running, consumer_id: str) -> SseClient:
    client = await running.stream(consumer_id)
    assert client.status == 200
    await client.opening()
    return client


async def update(
    running: Running,
    consumer_id: str,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
) -> Any:
    response = await running.api(
        "POST",
        f"/consumers/{consumer_id}/subscriptions",
        {"add": list(add), "remove": list(remove)},
    )
    assert response.status == 200, response.text
    return response.json()


async def subscriptions_of(running: Running, consumer_id: str) -> list[str]:
    response = await running.api("GET", f"/consumers/{consumer_id}")
    assert response.status == 200, response.text
    return list(response.json()["subscriptions"])


def assert_message(frame: Frame, event_id: int, topic: str, payload: str) -> None:
    assert (frame.id, frame.event, frame.decoded) == (str(event_id), "message", [topic, payload])


def assert_error(frame: Frame, code: str, message: str, topic: str | None) -> None:
    assert frame.id is None
    assert frame.topic == "/unifrost/error"
    assert frame.inner == {"error": {"code": code, "message": message, "topic": topic}}


# --- one broker subscription per topic ----------------------------------------------------


async def test_one_broker_subscription_per_topic(server: Running) -> None:
    news = [await server.create_consumer(["news"]) for _ in range(3)]
    late = [await server.create_consumer() for _ in range(2)]
    for consumer_id in late:
        assert (await update(server, consumer_id, add=["news", "sport"]))["errors"] == []
    sport_only = await server.create_consumer(["sport"])
    await assert_broker_subscriptions(server, {"news": 1, "sport": 1})
    assert await metric(server, "unifrost_subscriptions") == 3 + 2 * 2 + 1

    readers = {cid: await open_stream(server, cid) for cid in [*news, *late, sport_only]}
    await server.publish("news", "headline")
    await server.publish("sport", "score")
    for cid in news:
        assert_message(await readers[cid].data_frame(), 1, "news", "headline")
    for cid in late:
        assert_message(await readers[cid].data_frame(), 1, "news", "headline")
        assert_message(await readers[cid].data_frame(), 2, "sport", "score")
    assert_message(await readers[sport_only].data_frame(), 1, "sport", "score")
    assert await metric(server, "unifrost_messages_received_total") == 2
    for client in readers.values():
        client.close()


async def test_released_when_last_consumer_unsubscribes(server: Running) -> None:
    ids = [await server.create_consumer(["news", "keep"]) for _ in range(3)]
    for consumer_id in ids[:2]:
        assert (await update(server, consumer_id, remove=["news"]))["subscriptions"] == ["keep"]
        await assert_broker_subscriptions(server, {"keep": 1, "news": 1})
    assert (await update(server, ids[2], remove=["news"]))["subscriptions"] == ["keep"]
    await wait_until(lambda: "news" not in bus_subscriptions(server))
    await assert_broker_subscriptions(server, {"keep": 1})
    # Removing again is a no-op, and the other topic is untouched.
    assert (await update(server, ids[2], remove=["news"]))["subscriptions"] == ["keep"]
    await assert_broker_subscriptions(server, {"keep": 1})


async def test_released_when_last_consumer_is_deleted(server: Running) -> None:
    first = await server.create_consumer(["news"])
    second = await server.create_consumer(["news"])
    assert (await server.api("DELETE", f"/consumers/{first}")).status == 204
    await assert_broker_subscriptions(server, {"news": 1})
    assert (await server.api("DELETE", f"/consumers/{second}")).status == 204
    await wait_until(lambda: bus_subscriptions(server) == {})
    await assert_broker_subscriptions(server, {})
    assert await metric(server, "unifrost_subscriptions") == 0


async def test_released_when_last_consumer_is_evicted_by_ttl() -> None:
    async with running_server(consumer_ttl=0.3, heartbeat=0.2) as running:
        streaming = await running.create_consumer(["news"])
        idle = await running.create_consumer(["news"])
        client = await open_stream(running, streaming)
        # The idle consumer is evicted; the streaming one keeps the topic alive.
        await wait_until(lambda: running.manager.get(idle) is None)
        assert (await running.api("GET", f"/consumers/{idle}")).status == 404
        await assert_broker_subscriptions(running, {"news": 1})
        await running.publish("news", "still here")
        assert_message(await client.data_frame(), 1, "news", "still here")
        # Once its stream closes, the last consumer is evicted and the topic released.
        client.close()
        await wait_until(lambda: running.manager.get(streaming) is None)
        await wait_until(lambda: bus_subscriptions(running) == {})
        await assert_broker_subscriptions(running, {})


async def test_topic_works_again_after_release(server: Running) -> None:
    first = await server.create_consumer(["news"])
    assert (await server.api("DELETE", f"/consumers/{first}")).status == 204
    await wait_until(lambda: bus_subscriptions(server) == {})

    second = await server.create_consumer(["news"])
    await assert_broker_subscriptions(server, {"news": 1})
    client = await open_stream(server, second)
    await server.publish("news", "back again")
    assert_message(await client.data_frame(), 1, "news", "back again")

    # Release by unsubscribing, then subscribe the same consumer again.
    await update(server, second, remove=["news"])
    await wait_until(lambda: bus_subscriptions(server) == {})
    await server.publish("news", "nobody listens")
    await update(server, second, add=["news"])
    await assert_broker_subscriptions(server, {"news": 1})
    await server.publish("news", "and again")
    assert_message(await client.data_frame(), 2, "news", "and again")
    client.close()


# --- fan-out across instances ------------------------------------------------------------


async def test_every_instance_delivers_every_message() -> None:
    bus = f"memory://shared-{uuid.uuid4().hex}"
    async with running_server(broker=bus) as first, running_server(broker=bus) as second:
        readers: list[SseClient] = []
        for running in (first, second):
            for _ in range(2):
                readers.append(await open_stream(running, await running.create_consumer(["news"])))
        # Each instance holds its own single subscription on the shared broker.
        assert bus_subscriptions(first) == {"news": 2}
        assert hub_topics(first) == hub_topics(second) == ["news"]

        payloads = [f"message {i}" for i in range(5)]
        for i, payload in enumerate(payloads):
            await (first if i % 2 == 0 else second).publish("news", payload)
        for client in readers:
            frames = await client.messages(len(payloads))
            assert [(f.id, f.decoded) for f in frames] == [
                (str(i + 1), ["news", p]) for i, p in enumerate(payloads)
            ]
        for running in (first, second):
            assert await metric(running, "unifrost_messages_received_total") == len(payloads)
            assert await metric(running, "unifrost_messages_delivered_total") == 2 * len(payloads)
        for client in readers:
            client.close()


# --- broker trouble --------------------------------------------------------------------------


async def test_subscription_failure_reaches_only_that_topics_consumers(server: Running) -> None:
    both = await server.create_consumer(["t1", "t2"])
    only_t1 = await server.create_consumer(["t1"])
    only_t2 = await server.create_consumer(["t2"])
    readers = {cid: await open_stream(server, cid) for cid in (both, only_t1, only_t2)}

    server.broker.fail_subscription("t1", "boom")

    assert_error(await readers[both].data_frame(), "subscription-failure", "boom", "t1")
    assert_error(await readers[only_t1].data_frame(), "subscription-failure", "boom", "t1")
    assert await subscriptions_of(server, both) == ["t2"]
    assert await subscriptions_of(server, only_t1) == []
    assert await subscriptions_of(server, only_t2) == ["t2"]
    await assert_broker_subscriptions(server, {"t2": 1})
    assert await metric(server, "unifrost_subscriptions") == 2
    assert await metric(server, "unifrost_broker_errors_total") == 1
    assert (await server.api("GET", "/healthz")).status == 200
    assert (await server.api("GET", "/readyz")).status == 200

    # t2 keeps flowing; t1 is gone (its message never shows up before the next t2 one).
    await server.publish("t1", "lost")
    await server.publish("t2", "flowing")
    assert_message(await readers[both].data_frame(), 1, "t2", "flowing")
    assert_message(await readers[only_t2].data_frame(), 1, "t2", "flowing")

    # The failed topic can be subscribed to again.
    assert (await update(server, only_t1, add=["t1"]))["errors"] == []
    await assert_broker_subscriptions(server, {"t1": 1, "t2": 1})
    await server.publish("t1", "recovered")
    assert_message(await readers[only_t1].data_frame(), 1, "t1", "recovered")
    for client in readers.values():
        client.close()


async def test_rejected_topic_is_reported_per_topic(server: Running) -> None:
    server.broker.rejected_topics.add("forbidden")
    consumer_id = await server.create_consumer()
    body = await update(server, consumer_id, add=["forbidden", "fine"])
    assert body["subscriptions"] == ["fine"]
    assert body["errors"] == [
        {
            "topic": "forbidden",
            "code": "subscription-failure",
            "message": "subscription to 'forbidden' refused",
        }
    ]
    await assert_broker_subscriptions(server, {"fine": 1})
    assert await metric(server, "unifrost_subscriptions") == 1


async def test_broker_down_and_recovery_reach_every_open_stream(server: Running) -> None:
    subscribed = await server.create_consumer(["news"])
    no_topics = await server.create_consumer()
    readers = [await open_stream(server, cid) for cid in (subscribed, no_topics)]

    server.broker.go_down("network partition")
    for client in readers:
        assert_error(await client.data_frame(), "broker-unavailable", "network partition", None)
    assert (await server.api("GET", "/readyz")).status == 503
    response = await server.api("POST", "/publish?topic=news", "while down")
    assert response.status == 503
    assert response.json()["error"]["code"] == "broker-unavailable"
    assert await metric(server, "unifrost_broker_up") == 0

    server.broker.come_back()
    for client in readers:
        assert_error(
            await client.data_frame(), "broker-recovered", "broker connection restored", None
        )
    assert (await server.api("GET", "/readyz")).status == 200
    assert await metric(server, "unifrost_broker_up") == 1
    assert await metric(server, "unifrost_broker_reconnects_total") == 1

    # The existing subscription resumed without anyone re-subscribing.
    await assert_broker_subscriptions(server, {"news": 1})
    await server.publish("news", "after recovery")
    assert_message(await readers[0].data_frame(), 1, "news", "after recovery")
    for client in readers:
        client.close()


# --- concurrency ------------------------------------------------------------------------------


async def subscribe_all(running: Running, ids: list[str], topic: str) -> list[Any]:
    return list(await asyncio.gather(*(update(running, cid, add=[topic]) for cid in ids)))


async def test_concurrent_subscribes_share_one_broker_subscription(server: Running) -> None:
    ids = [await server.create_consumer() for _ in range(20)]
    readers = [await open_stream(server, cid) for cid in ids]
    results = await subscribe_all(server, ids, "hot")
    assert [(r["consumer_id"], r["subscriptions"], r["errors"]) for r in results] == [
        (cid, ["hot"], []) for cid in ids
    ]
    await assert_broker_subscriptions(server, {"hot": 1})
    await server.publish("hot", "for everyone")
    for client in readers:
        assert_message(await client.data_frame(), 1, "hot", "for everyone")
    assert await metric(server, "unifrost_messages_delivered_total") == len(ids)
    for client in readers:
        client.close()


class LaggingBroker(MemoryBroker):
    """The memory driver with a network round trip before each subscribe, as a
    remote broker has: concurrent subscribers overlap while one is pending."""

    lag = 0.05

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.subscribe_calls = 0

    async def subscribe(
        self, topic: str, on_message: MessageCallback, on_error: ErrorCallback
    ) -> Subscription:
        self.subscribe_calls += 1
        await asyncio.sleep(self.lag)
        return await super().subscribe(topic, on_message, on_error)


async def test_concurrent_subscribes_while_broker_subscribe_is_pending() -> None:
    async with running_server(
        driver=LaggingBroker(),
    ) as running:
        ids = [await running.create_consumer() for _ in range(20)]
        readers = [await open_stream(running, cid) for cid in ids]
        results = await subscribe_all(running, ids, "hot")
        assert all(r["subscriptions"] == ["hot"] and r["errors"] == [] for r in results)
        assert running.broker.subscribe_calls == 1
        await assert_broker_subscriptions(running, {"hot": 1})
        await running.publish("hot", "for everyone")
        for client in readers:
            assert_message(await client.data_frame(), 1, "hot", "for everyone")
        for client in readers:
            client.close()


async def test_concurrent_subscribes_to_a_refused_topic_all_fail() -> None:
    async with running_server(
        driver=LaggingBroker(),
    ) as running:
        running.broker.rejected_topics.add("hot")
        ids = [await running.create_consumer() for _ in range(10)]
        results = await subscribe_all(running, ids, "hot")
        for result in results:
            assert result["subscriptions"] == []
            assert [(e["topic"], e["code"]) for e in result["errors"]] == [
                ("hot", "subscription-failure")
            ]
        assert running.broker.subscribe_calls == 1
        await assert_broker_subscriptions(running, {})
        assert await metric(running, "unifrost_subscriptions") == 0
        # The refusal is not sticky: a later subscribe tries the broker again.
        running.broker.rejected_topics.clear()
        assert (await update(running, ids[0], add=["hot"]))["errors"] == []
        assert running.broker.subscribe_calls == 2
        await assert_broker_subscriptions(running, {"hot": 1})


async def test_consumer_deleted_while_broker_subscribe_is_pending() -> None:
    async with running_server(
        driver=LaggingBroker(),
    ) as running:
        consumer_id = await running.create_consumer()
        pending = asyncio.ensure_future(update(running, consumer_id, add=["hot"]))
        await wait_until(lambda: running.broker.subscribe_calls == 1)
        assert (await running.api("DELETE", f"/consumers/{consumer_id}")).status == 204
        await pending
        # Nobody wants the topic any more, so the late subscription is released.
        await wait_until(lambda: bus_subscriptions(running) == {})
        await assert_broker_subscriptions(running, {})
        assert await metric(running, "unifrost_subscriptions") == 0


async def test_messages_lost_by_the_driver_reach_that_topics_streams(server: Running) -> None:
    lossy = await open_stream(server, await server.create_consumer(["ticks"]))
    other = await open_stream(server, await server.create_consumer(["news"]))
    server.broker.drop_messages("ticks", 7, "slow consumer")
    frame = await lossy.data_frame()
    assert frame.id is None and frame.topic == "/unifrost/error"
    error = frame.inner["error"]
    assert (error["code"], error["topic"], error["count"]) == ("messages-dropped", "ticks", 7)
    assert "slow consumer" in error["message"]
    assert await metric(server, "unifrost_messages_dropped_total", reason="broker") == 7
    # Streams of other topics hear nothing of it.
    await server.publish("news", "unaffected")
    assert_message(await other.data_frame(), 1, "news", "unaffected")
