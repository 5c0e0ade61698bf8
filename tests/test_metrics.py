"""``GET /metrics``: every SPEC family, exact counts, and no unbounded label values."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from service import __version__
from service.config import BufferSettings
from tests.support import Running, SseClient, running_server

PREFIX = "unifrost_"

# SPEC "Metrics": exposed sample name -> type.
COUNTERS = [
    "connections_opened_total",
    "connections_closed_total",
    "consumers_created_total",
    "consumers_evicted_total",
    "messages_received_total",
    "messages_delivered_total",
    "delivered_bytes_total",
    "messages_replayed_total",
    "messages_dropped_total",
    "slow_consumer_disconnects_total",
    "broker_errors_total",
    "broker_reconnects_total",
    "http_requests_total",
]
GAUGES = ["connections", "consumers", "subscriptions", "broker_subscriptions", "broker_up"]
HISTOGRAMS = [
    "stream_duration_seconds",
    "delivery_latency_seconds",
    "http_request_duration_seconds",
]


class Scrape:
    """One parsed exposition: sample lookup by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                self.types[name] = kind
        self.families = list(text_string_to_metric_families(text))
        self.samples = [sample for family in self.families for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        matches = [
            s.value
            for s in self.samples
            if s.name == PREFIX + name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(matches) == 1, (name, labels, matches)
        return float(matches[0])

    def label_values(self) -> set[str]:
        return {value for sample in self.samples for value in sample.labels.values()}


async def scrape(running: Running) -> Scrape:
    response = await running.api("GET", "/metrics")
    assert response.status == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll an async ``check`` returning truthy until it holds or time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def read_raw_frames(client: SseClient, count: int) -> list[bytes]:
    """The next ``count`` event blocks exactly as they came off the wire."""
    reader = client._reader
    assert reader is not None
    return [await asyncio.wait_for(reader.readuntil(b"\n\n"), 5) for _ in range(count)]


async def open_stream(running: Running, consumer_id: str) -> SseClient:
    client = await running.stream(consumer_id)
    assert client.status == 200
    await client.opening()
    return client


# --- the families -----------------------------------------------------------------------------


async def test_every_spec_family_is_exposed_with_its_type() -> None:
    async with running_server() as running:
        consumer_id = await running.create_consumer(["news"])
        client = await open_stream(running, consumer_id)
        await running.publish("news", "x")
        await client.data_frame()
        result = await scrape(running)
        client.close()

    for name in COUNTERS:
        assert result.types.get(PREFIX + name) == "counter", name
    for name in GAUGES:
        assert result.types.get(PREFIX + name) == "gauge", name
    for name in HISTOGRAMS:
        assert result.types.get(PREFIX + name) == "histogram", name
        names = {s.name for s in result.samples}
        for suffix in ("_bucket", "_sum", "_count"):
            assert PREFIX + name + suffix in names, name + suffix
    assert result.value("build_info", version=__version__) == 1.0
    # Every exposed family belongs to the service.
    assert all(name.startswith(PREFIX) for name in result.types)

    # Labelled series exist from the first scrape, with only the SPEC label names.
    for reason in ("client", "replaced", "consumer_closed", "slow_reader", "shutdown"):
        result.value("connections_closed_total", reason=reason)
    for reason in ("ttl", "deleted"):
        result.value("consumers_evicted_total", reason=reason)
    result.value("messages_dropped_total", reason="buffer_full")
    label_names = {
        s.name.removeprefix(PREFIX): set(s.labels) - {"le"} for s in result.samples if s.labels
    }
    assert label_names["http_requests_total"] == {"handler", "code"}
    assert label_names["http_request_duration_seconds_count"] == {"handler"}


async def test_labels_never_carry_consumer_ids_or_topic_names() -> None:
    consumer = "zzcons-4f7a1c9e"
    topic = "zztopic.8d2b6e0f"
    async with running_server() as running:
        await running.create_consumer([topic], id=consumer)
        client = await open_stream(running, consumer)
        await running.publish(topic, "payload")
        await client.data_frame()
        assert (await running.api("GET", f"/consumers/{consumer}")).status == 200
        assert (await running.api("GET", f"/consumers/{consumer}-missing")).status == 404
        assert (await running.api("GET", f"/{topic}")).status == 404
        assert (await running.public_api("GET", f"/events?id={consumer}-x")).status == 404
        removed = await running.api(
            "POST", f"/consumers/{consumer}/subscriptions", {"remove": [topic]}
        )
        assert removed.status == 200
        assert (await running.api("DELETE", f"/consumers/{consumer}")).status == 204
        assert await client.at_eof()
        result = await scrape(running)

    assert "zzcons" not in result.text
    assert "zztopic" not in result.text
    assert not any(consumer in v or topic in v for v in result.label_values())
    assert result.value("http_requests_total", handler="consumer", code="200") == 1
    assert result.value("http_requests_total", handler="consumer", code="404") == 1


# --- fan-out counts ---------------------------------------------------------------------------


async def test_fan_out_counts_match_what_clients_received() -> None:
    async with running_server() as running:
        ids = [await running.create_consumer(["scores"]) for _ in range(3)]
        clients = [await open_stream(running, consumer_id) for consumer_id in ids]
        for n in range(5):
            await running.publish("scores", f"goal {n}")
        received = [await read_raw_frames(client, 5) for client in clients]
        result = await scrape(running)

        assert received[0][4] == b'id: 5\nevent: message\ndata: ["scores","goal 4"]\n\n'
        wire_bytes = sum(len(frame) for frames in received for frame in frames)
        assert result.value("messages_received_total") == 5
        assert result.value("messages_delivered_total") == 15
        assert result.value("delivered_bytes_total") == wire_bytes
        assert result.value("delivery_latency_seconds_count") == 5
        assert result.value("connections") == 3
        assert result.value("connections_opened_total") == 3
        assert result.value("consumers") == 3
        assert result.value("consumers_created_total") == 3
        assert result.value("subscriptions") == 3
        assert result.value("broker_subscriptions") == 1
        assert result.value("messages_replayed_total") == 0
        assert result.value("messages_dropped_total", reason="buffer_full") == 0

        # All three leave the topic, each in its own way: the broker subscription goes.
        for consumer_id in ids[:2]:
            response = await running.api(
                "POST", f"/consumers/{consumer_id}/subscriptions", {"remove": ["scores"]}
            )
            assert response.status == 200
        after_two = await scrape(running)
        assert after_two.value("subscriptions") == 1
        assert after_two.value("broker_subscriptions") == 1
        assert (await running.api("DELETE", f"/consumers/{ids[2]}")).status == 204
        assert await clients[2].at_eof()
        clients[0].close()

        async def settled() -> bool:
            now = await scrape(running)
            return now.value("connections") == 1 and now.value("broker_subscriptions") == 0

        await eventually(settled)
        final = await scrape(running)
        assert final.value("subscriptions") == 0
        assert final.value("consumers") == 2
        assert final.value("consumers_evicted_total", reason="deleted") == 1
        assert final.value("connections_closed_total", reason="consumer_closed") == 1
        assert final.value("connections_closed_total", reason="client") == 1
        assert final.value("stream_duration_seconds_count") == 2
        clients[1].close()


async def test_replayed_frames_are_counted_on_reconnect() -> None:
    async with running_server() as running:
        consumer_id = await running.create_consumer(["feed"])
        client = await open_stream(running, consumer_id)
        await running.publish("feed", "live")
        await client.data_frame()
        client.close()

        async def disconnected() -> bool:
            return bool((await scrape(running)).value("connections") == 0)

        await eventually(disconnected)
        for n in range(4):
            await running.publish("feed", f"missed {n}")
        again = await open_stream(running, consumer_id)
        replayed = await again.messages(4)
        assert [(f.id, f.payload) for f in replayed] == [
            ("2", "missed 0"),
            ("3", "missed 1"),
            ("4", "missed 2"),
            ("5", "missed 3"),
        ]
        result = await scrape(running)
        assert result.value("messages_replayed_total") == 4
        assert result.value("messages_received_total") == 5
        assert result.value("messages_delivered_total") == 1

        # Resuming from an explicit id replays only what follows it.
        again.close()
        await eventually(disconnected)
        third = await running.stream(consumer_id, query="last_event_id=3")
        await third.opening()
        assert [f.id for f in await third.messages(2)] == ["4", "5"]
        assert (await scrape(running)).value("messages_replayed_total") == 6
        third.close()


async def test_buffer_overflow_counts_only_undelivered_losses() -> None:
    async with running_server(buffer=BufferSettings(max_messages=3)) as running:
        offline = await running.create_consumer(["busy"])
        online = await running.create_consumer(["busy"])
        client = await open_stream(running, online)
        for n in range(5):
            await running.publish("busy", f"n{n}")
        assert [f.payload for f in await client.messages(5)] == [f"n{n}" for n in range(5)]
        result = await scrape(running)
        # The offline consumer lost its two oldest; the online one lost nothing.
        assert result.value("messages_dropped_total", reason="buffer_full") == 2
        assert result.value("messages_received_total") == 5
        assert result.value("messages_delivered_total") == 5
        described = (await running.api("GET", f"/consumers/{offline}")).json()
        assert described["dropped"] == 2
        client.close()


# --- HTTP and broker -------------------------------------------------------------------------


async def test_http_requests_are_counted_by_handler_and_code() -> None:
    async with running_server() as running:
        assert (await running.api("GET", "/no/such/route")).status == 404
        assert (await running.public_api("GET", "/nothing-here")).status == 404
        assert (await running.api("GET", "/consumers/nobody")).status == 404
        assert (await running.api("POST", "/consumers", "{not json")).status == 400
        assert (await running.public_api("GET", "/healthz")).status == 200
        result = await scrape(running)
    assert result.value("http_requests_total", handler="not_found", code="404") == 2
    assert result.value("http_requests_total", handler="consumer", code="404") == 1
    assert result.value("http_requests_total", handler="consumers", code="400") == 1
    assert result.value("http_requests_total", handler="healthz", code="200") == 1
    assert result.value("http_request_duration_seconds_count", handler="not_found") == 2


async def test_broker_up_follows_the_broker() -> None:
    async with running_server() as running:
        assert (await scrape(running)).value("broker_up") == 1
        running.broker.go_down()
        assert (await scrape(running)).value("broker_up") == 0
        running.broker.come_back()
        result = await scrape(running)
        assert result.value("broker_up") == 1
        assert result.value("broker_reconnects_total") == 1
