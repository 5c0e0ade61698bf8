"""``GET /events`` over real sockets: headers, frame encoding, ids, errors, CORS,
auto-created consumers, heartbeats and the slow-reader policy."""

from __future__ import annotations

import asyncio
import contextlib
import time

from service.config import BufferSettings, ClientSubscriptionSettings
from tests.support import Frame, Running, SseClient, metric, running_server

# --- helpers ------------------------------------------------------------------------------


async def read_ids_until_eof(client: SseClient) -> list[int]:
    """Ids of every complete topic frame left on a stream the server has closed."""
    ids: list[int] = []
    while True:
        try:
            frame = await client.frame()
        except asyncio.IncompleteReadError:  # EOF, possibly inside a half-written frame
            return ids
        if frame.id is not None:
            ids.append(int(frame.id))


def assert_topic_frame(frame: Frame, event_id: int, topic: str, payload: str) -> None:
    assert (frame.id, frame.event, frame.decoded) == (str(event_id), "message", [topic, payload])


# --- response head and opening frames -----------------------------------------------------


async def test_stream_response_headers(server: Running) -> None:
    consumer_id = await server.create_consumer(["news"])
    client = await server.stream(consumer_id)
    assert client.status == 200
    assert client.headers["content-type"].split(";")[0].strip() == "text/event-stream"
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    assert "access-control-allow-origin" not in client.headers
    client.close()


async def test_first_frame_is_retry_from_settings() -> None:
    async with running_server(retry=1.5) as running:
        consumer_id = await running.create_consumer()
        client = await running.stream(consumer_id)
        first = await client.frame()
        assert (first.retry, first.data, first.id, first.event) == (1500, None, None, None)
        client.close()


async def test_info_frame_shape() -> None:
    async with running_server(consumer_ttl=42.5) as running:
        consumer_id = await running.create_consumer(["zeta", "alpha", "mid"])
        client = await running.stream(consumer_id)
        retry, info = await client.opening()
        assert retry == 3000
        assert info.event == "message"
        assert info.id is None
        topic, inner_text = info.decoded
        assert topic == "/unifrost/info"
        assert isinstance(inner_text, str)  # the inner object is itself a JSON string
        inner = info.inner
        assert inner["config"]["consumer_id"] == consumer_id
        assert inner["config"]["consumer_ttl_millis"] == 42500
        assert inner["subscriptions"] == ["alpha", "mid", "zeta"]
        client.close()


# --- topic frames and ids -----------------------------------------------------------------


async def test_topic_frames_have_per_consumer_ids(server: Running) -> None:
    first_id = await server.create_consumer(["news"])
    first = await server.stream(first_id)
    await first.opening()
    await server.publish("news", "one")
    assert_topic_frame(await first.data_frame(), 1, "news", "one")

    second_id = await server.create_consumer(["news"])
    second = await server.stream(second_id)
    await second.opening()
    await server.publish("news", "two")
    await server.publish("news", "three")

    assert [(f.id, f.payload) for f in await first.messages(2)] == [("2", "two"), ("3", "three")]
    second_frames = await second.messages(2)
    assert_topic_frame(second_frames[0], 1, "news", "two")
    assert_topic_frame(second_frames[1], 2, "news", "three")
    first.close()
    second.close()


async def test_ids_count_across_topics(server: Running) -> None:
    consumer_id = await server.create_consumer(["a", "b"])
    client = await server.stream(consumer_id)
    await client.opening()
    for topic, payload in [("a", "1"), ("b", "2"), ("a", "3")]:
        await server.publish(topic, payload)
    frames = await client.messages(3)
    assert [(f.id, f.topic, f.payload) for f in frames] == [
        ("1", "a", "1"),
        ("2", "b", "2"),
        ("3", "a", "3"),
    ]
    client.close()


async def test_error_and_closed_frames_carry_no_id(server: Running) -> None:
    consumer_id = await server.create_consumer(["news", "fragile"])
    client = await server.stream(consumer_id)
    _, info = await client.opening()
    assert info.id is None
    await server.publish("news", "before")
    assert_topic_frame(await client.data_frame(), 1, "news", "before")

    server.broker.fail_subscription("fragile", "topic deleted")
    error = await client.data_frame()
    assert error.id is None
    assert (error.event, error.topic) == ("message", "/unifrost/error")
    assert error.inner["error"]["code"] == "subscription-failure"
    assert error.inner["error"]["topic"] == "fragile"

    await server.publish("news", "after")
    assert_topic_frame(await client.data_frame(), 2, "news", "after")

    response = await server.api("DELETE", f"/consumers/{consumer_id}")
    assert response.status == 204
    closed = await client.data_frame()
    assert closed.id is None
    assert (closed.event, closed.decoded) == ("message", ["/unifrost/closed", "consumer closed"])
    assert await client.at_eof()


# --- payload encoding ---------------------------------------------------------------------


async def test_invalid_utf8_becomes_replacement_character(server: Running) -> None:
    consumer_id = await server.create_consumer(["bin"])
    client = await server.stream(consumer_id)
    await client.opening()
    await server.publish("bin", b"ok\xff\xfeend\xc3")
    frame = await client.data_frame()
    assert_topic_frame(frame, 1, "bin", "ok\ufffd\ufffdend\ufffd")
    client.close()


async def test_awkward_payload_survives_as_one_data_line(server: Running) -> None:
    payload = 'line one\nline two\r\n\r\nquote " backslash \\ tab \t nul \x00 é ✓ 🎉 \u2028 end'
    consumer_id = await server.create_consumer(["text"])
    client = await server.stream(consumer_id)
    await client.opening()
    await server.publish("text", payload)
    frame = await client.data_frame()
    assert frame.data is not None
    assert "\n" not in frame.data and "\r" not in frame.data
    assert_topic_frame(frame, 1, "text", payload)
    # The stream stays in step: the next frame parses normally.
    await server.publish("text", "next")
    assert_topic_frame(await client.data_frame(), 2, "text", "next")
    client.close()


async def test_event_name_topic() -> None:
    async with running_server(event_name="topic") as running:
        consumer_id = await running.create_consumer(["prices", "news"])
        client = await running.stream(consumer_id)
        _, info = await client.opening()
        assert info.event == "message"
        await running.publish("prices", "42")
        await running.publish("news", "hi")
        frames = await client.messages(2)
        assert [(f.id, f.event, f.decoded) for f in frames] == [
            ("1", "prices", ["prices", "42"]),
            ("2", "news", ["news", "hi"]),
        ]
        client.close()


# --- request errors -----------------------------------------------------------------------


async def test_missing_id_is_400_json(server: Running) -> None:
    client = await server.stream(None)
    assert client.status == 400
    assert client.headers["content-type"].startswith("application/json")
    assert client.error_json()["error"]["code"] == "bad-request"
    assert isinstance(client.error_json()["error"]["message"], str)


async def test_unknown_id_is_404_json(server: Running) -> None:
    client = await server.stream("no-such-consumer")
    assert client.status == 404
    assert client.headers["content-type"].startswith("application/json")
    assert client.error_json()["error"]["code"] == "not-found"


async def test_bad_last_event_id_query_is_400(server: Running) -> None:
    consumer_id = await server.create_consumer(["news"])
    for bad in ("abc", "-1", "1.5", ""):
        client = await server.stream(consumer_id, query=f"last_event_id={bad}")
        assert client.status == 400, bad
        assert client.error_json()["error"]["code"] == "bad-request"
    # The consumer is untouched by the refused requests.
    response = await server.api("GET", f"/consumers/{consumer_id}")
    assert response.json()["connected"] is False


# --- CORS ---------------------------------------------------------------------------------


async def test_cors_origin_echoed_only_when_allowed() -> None:
    async with running_server(cors_origins=("https://app.example",)) as running:
        consumer_id = await running.create_consumer(["news"])
        allowed = await running.stream(consumer_id, headers={"Origin": "https://app.example"})
        assert allowed.status == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        await allowed.opening()
        allowed.close()

        other = await running.stream(consumer_id, headers={"Origin": "https://evil.example"})
        assert other.status == 200
        assert "access-control-allow-origin" not in other.headers
        other.close()

        plain = await running.stream(consumer_id)
        assert plain.status == 200
        assert "access-control-allow-origin" not in plain.headers
        plain.close()


# --- auto-created consumers ---------------------------------------------------------------


async def test_auto_create_consumer_without_id() -> None:
    client_subs = ClientSubscriptionSettings(enabled=True, allow=("news.*", "chat"))
    async with running_server(
        auto_create_consumers=True, client_subscriptions=client_subs
    ) as running:
        client = await running.stream(None, query="topics=news.sport,chat")
        assert client.status == 200
        _, info = await client.opening()
        consumer_id = info.inner["config"]["consumer_id"]
        assert isinstance(consumer_id, str) and len(consumer_id) >= 22
        assert info.inner["subscriptions"] == ["chat", "news.sport"]

        response = await running.api("GET", f"/consumers/{consumer_id}")
        assert response.status == 200
        assert response.json()["connected"] is True
        assert response.json()["subscriptions"] == ["chat", "news.sport"]

        await running.publish("news.sport", "goal")
        assert_topic_frame(await client.data_frame(), 1, "news.sport", "goal")

        other = await running.stream(None)
        _, other_info = await other.opening()
        assert other_info.inner["config"]["consumer_id"] != consumer_id
        assert other_info.inner["subscriptions"] == []
        client.close()
        other.close()


async def test_auto_create_forbidden_topic_is_403() -> None:
    client_subs = ClientSubscriptionSettings(enabled=True, allow=("news.*",))
    async with running_server(
        auto_create_consumers=True, client_subscriptions=client_subs
    ) as running:
        client = await running.stream(None, query="topics=news.a,secret")
        assert client.status == 403
        assert client.headers["content-type"].startswith("application/json")
        assert client.error_json()["error"]["code"] == "forbidden"
        # Nothing was created for the refused request.
        response = await running.api("GET", "/consumers")
        assert response.json()["count"] == 0


# --- heartbeats ---------------------------------------------------------------------------


async def test_idle_stream_gets_heartbeats() -> None:
    async with running_server(heartbeat=0.2) as running:
        consumer_id = await running.create_consumer(["quiet"])
        client = await running.stream(consumer_id)
        await client.opening()
        opened = time.monotonic()
        beats: list[float] = []
        while len(beats) < 5:
            frame = await client.frame(timeout=1.0)
            assert frame.comment and frame.data is None and frame.id is None, frame
            beats.append(time.monotonic())
        gaps = [b - a for a, b in zip([opened, *beats], beats, strict=False)]
        assert max(gaps) <= 0.2 + 0.15, gaps
        assert beats[-1] - beats[0] >= 0.35, gaps  # about one per interval, not a storm
        client.close()


async def test_busy_stream_gets_no_heartbeats() -> None:
    async with running_server(heartbeat=0.2) as running:
        consumer_id = await running.create_consumer(["busy"])
        client = await running.stream(consumer_id)
        await client.opening()
        count = 25

        async def publisher() -> None:
            for i in range(1, count + 1):
                await running.publish("busy", f"m{i}")
                await asyncio.sleep(0.03)

        task = asyncio.create_task(publisher())
        frames = [await client.frame(timeout=2.0) for _ in range(count)]
        await task
        assert [f.comment for f in frames] == [False] * count
        assert [(f.id, f.payload) for f in frames] == [
            (str(i), f"m{i}") for i in range(1, count + 1)
        ]
        client.close()


# --- slow readers -------------------------------------------------------------------------


async def test_slow_reader_is_cut_off_without_delaying_others() -> None:
    async with running_server(
        max_write_buffer=64 * 1024,
        buffer=BufferSettings(max_messages=1000, max_bytes=64 * 1024 * 1024),
    ) as running:
        slow_id = await running.create_consumer(["big"])
        fast_id = await running.create_consumer(["big"])
        slow = await running.stream(slow_id, recv_buffer=4096)  # connected, never read
        fast = await running.stream(fast_id)
        await fast.opening()

        def payload(i: int) -> str:
            return f"{i:05d}:" + "x" * 32 * 1024

        published = 0
        while published < 300:  # far more than kernel buffers can hide
            published += 1
            started = time.monotonic()
            await running.publish("big", payload(published))
            frame = await fast.data_frame(timeout=1.0)
            assert time.monotonic() - started < 1.0
            assert (frame.id, frame.payload) == (str(published), payload(published))
            consumer = (await running.api("GET", f"/consumers/{slow_id}")).json()
            if not consumer["connected"]:
                break
        assert await metric(running, "unifrost_slow_consumer_disconnects_total") == 1.0
        assert await metric(running, "unifrost_connections_closed_total", reason="slow_reader") == 1
        assert await metric(running, "unifrost_connections") == 1.0

        # The fast reader keeps going at full speed after the cut.
        for _ in range(3):
            published += 1
            await running.publish("big", payload(published))
            frame = await fast.data_frame(timeout=1.0)
            assert (frame.id, frame.payload) == (str(published), payload(published))

        # The slow client reads what reached it, then resumes from the consumer's buffer.
        seen = await read_ids_until_eof(slow)
        assert seen == list(range(1, len(seen) + 1))
        assert len(seen) < published
        resumed = await running.stream(slow_id, headers={"Last-Event-ID": str(len(seen))})
        assert resumed.status == 200
        await resumed.opening()
        for i in range(len(seen) + 1, published + 1):
            frame = await resumed.data_frame()
            assert (frame.id, frame.payload) == (str(i), payload(i))
        await running.publish("big", "live")
        frame = await resumed.data_frame()
        assert (frame.id, frame.payload) == (str(published + 1), "live")
        assert await metric(running, "unifrost_slow_consumer_disconnects_total") == 1.0
        fast.close()
        resumed.close()


async def test_a_burst_in_one_loop_iteration_arrives_whole_and_in_order() -> None:
    # Messages fanned out in one IOLoop iteration leave in one write per stream;
    # an error frame raised mid-burst keeps its place between them.
    async with running_server() as running:
        consumer_id = await running.create_consumer(["burst"])
        client = await running.stream(consumer_id)
        await client.opening()
        broker = running.broker
        for i in range(1, 101):
            await broker.publish("burst", f"m{i}".encode())  # never yields: one iteration
        broker.go_down("blip")
        broker.come_back()
        await broker.publish("burst", b"m101")
        frames = [await client.data_frame() for _ in range(103)]
        assert [(f.id, f.payload) for f in frames[:100]] == [
            (str(i), f"m{i}") for i in range(1, 101)
        ]
        assert [f.inner["error"]["code"] for f in frames[100:102]] == [
            "broker-unavailable",
            "broker-recovered",
        ]
        assert (frames[102].id, frames[102].payload) == ("101", "m101")
        client.close()


async def open_raw_stream(running: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream on a plain socket (a new consumer of ``quiet``), read up to its first frame."""
    consumer_id = await running.create_consumer(["quiet"])
    reader, writer = await asyncio.open_connection(*running.public)
    writer.write(b"GET /events?id=%s HTTP/1.1\r\nHost: x\r\n\r\n" % consumer_id.encode())
    await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
    return reader, writer


async def test_a_client_that_hangs_up_is_noticed_without_a_write() -> None:
    async with running_server(heartbeat=60) as running:
        _reader, writer = await open_raw_stream(running)
        assert running.server.ctx is not None
        manager = running.server.ctx.manager
        assert manager.connected_count == 1
        writer.close()
        deadline = time.monotonic() + 5
        while manager.connected_count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert manager.connected_count == 0
        assert await metric(running, "unifrost_connections_closed_total", reason="client") == 1


async def test_a_client_that_keeps_sending_after_its_request_is_cut_off() -> None:
    async with running_server(heartbeat=60) as running:
        reader, writer = await open_raw_stream(running)
        writer.write(b"x" * 200_000)  # far past what a stream buffers from its client
        # The server hangs up (with a reset: it leaves what was sent unread).
        with contextlib.suppress(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert await metric(running, "unifrost_connections_closed_total", reason="client") == 1
