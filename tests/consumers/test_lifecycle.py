"""Consumer lifecycle over real sockets: TTL eviction, reconnect and resume,
resume gaps, stream takeover, deletion and shutdown."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

from service.config import BufferSettings
from tests.support import Frame, Running, SseClient, metric, running_server, wait_for

# --- helpers ------------------------------------------------------------------------------


async def consumer_status(running: Running, consumer_id: str) -> int:
    return (await running.api("GET", f"/consumers/{consumer_id}")).status


async def wait_disconnected(running: Running, consumer_id: str) -> None:
    """Wait until the server has noticed that the consumer's stream is gone."""

    async def disconnected() -> bool:
        response = await running.api("GET", f"/consumers/{consumer_id}")
        return response.status == 200 and response.json()["connected"] is False

    await wait_for(disconnected)


async def wait_evicted(running: Running, consumer_id: str, timeout: float = 3.0) -> None:
    async def gone() -> bool:
        return await consumer_status(running, consumer_id) == 404

    await wait_for(gone, timeout)


async def connect(running: Running, consumer_id: str, **kw: Any) -> tuple[SseClient, Frame]:
    """Open a stream and read past its opening; returns the client and the info frame."""
    client = await running.stream(consumer_id, **kw)
    assert client.status == 200, client.error_body
    _, info = await client.opening()
    return client, info


def topic_frames(frames: list[Frame]) -> list[tuple[int, str, str]]:
    return [(int(f.id or 0), f.topic, f.payload) for f in frames]


# --- TTL ----------------------------------------------------------------------------------


async def test_never_connected_consumer_expires_after_ttl() -> None:
    async with running_server(consumer_ttl=0.3) as running:
        created = time.monotonic()
        consumer_id = await running.create_consumer(["news"])
        assert await consumer_status(running, consumer_id) == 200
        await wait_evicted(running, consumer_id)
        assert time.monotonic() - created >= 0.25
        assert await metric(running, "unifrost_consumers_evicted_total", reason="ttl") == 1.0
        assert await metric(running, "unifrost_consumers") == 0.0
        client = await running.stream(consumer_id)
        assert client.status == 404
        assert client.error_json()["error"]["code"] == "not-found"


async def test_ttl_counts_from_disconnect_not_creation() -> None:
    async with running_server(consumer_ttl=0.3) as running:
        consumer_id = await running.create_consumer(["news"])
        client, _ = await connect(running, consumer_id)
        await asyncio.sleep(0.7)  # more than twice the TTL with the stream open
        response = await running.api("GET", f"/consumers/{consumer_id}")
        assert response.status == 200
        assert response.json()["connected"] is True
        assert await metric(running, "unifrost_consumers_evicted_total", reason="ttl") == 0.0

        client.close()  # abrupt, like a closing tab
        closed = time.monotonic()
        await wait_disconnected(running, consumer_id)
        assert await consumer_status(running, consumer_id) == 200
        await wait_evicted(running, consumer_id)
        assert 0.25 <= time.monotonic() - closed <= 2.0
        assert await metric(running, "unifrost_consumers_evicted_total", reason="ttl") == 1.0


async def test_reconnect_inside_ttl_keeps_subscriptions_and_messages() -> None:
    async with running_server(consumer_ttl=1.0) as running:
        consumer_id = await running.create_consumer(["b", "a"])
        client, _ = await connect(running, consumer_id)
        await running.publish("a", "live-1")
        await running.publish("b", "live-2")
        assert topic_frames(await client.messages(2)) == [(1, "a", "live-1"), (2, "b", "live-2")]
        client.close()
        await wait_disconnected(running, consumer_id)

        for topic, payload in [("a", "away-3"), ("b", "away-4"), ("a", "away-5")]:
            await running.publish(topic, payload)

        again, info = await connect(running, consumer_id)  # no Last-Event-ID
        assert info.inner["config"]["consumer_id"] == consumer_id
        assert info.inner["subscriptions"] == ["a", "b"]
        assert topic_frames(await again.messages(3)) == [
            (3, "a", "away-3"),
            (4, "b", "away-4"),
            (5, "a", "away-5"),
        ]
        await running.publish("b", "live-6")
        assert topic_frames([await again.data_frame()]) == [(6, "b", "live-6")]
        again.close()


# --- resume -------------------------------------------------------------------------------


async def _resume_case(resume: dict[str, Any]) -> None:
    async with running_server(consumer_ttl=5.0) as running:
        consumer_id = await running.create_consumer(["news"])
        client, _ = await connect(running, consumer_id)
        for i in range(1, 6):
            await running.publish("news", f"m{i}")
        assert [f.id for f in await client.messages(5)] == ["1", "2", "3", "4", "5"]
        client.close()
        await wait_disconnected(running, consumer_id)

        again, _ = await connect(running, consumer_id, **resume)
        replay = await again.messages(3)
        assert topic_frames(replay) == [(3, "news", "m3"), (4, "news", "m4"), (5, "news", "m5")]
        await running.publish("news", "m6")
        assert topic_frames([await again.data_frame()]) == [(6, "news", "m6")]
        assert await metric(running, "unifrost_messages_replayed_total") == 3.0
        again.close()


async def test_resume_with_last_event_id_header() -> None:
    await _resume_case({"headers": {"Last-Event-ID": "2"}})


async def test_resume_with_last_event_id_query() -> None:
    await _resume_case({"query": "last_event_id=2"})


async def test_resume_at_latest_id_replays_nothing() -> None:
    async with running_server() as running:
        consumer_id = await running.create_consumer(["news"])
        client, _ = await connect(running, consumer_id)
        await running.publish("news", "m1")
        await running.publish("news", "m2")
        assert [f.id for f in await client.messages(2)] == ["1", "2"]
        client.close()
        await wait_disconnected(running, consumer_id)

        again, _ = await connect(running, consumer_id, headers={"Last-Event-ID": "2"})
        await running.publish("news", "m3")
        assert topic_frames([await again.data_frame()]) == [(3, "news", "m3")]
        again.close()


async def test_last_event_id_from_another_consumer_is_ignored() -> None:
    # A custom id reused after eviction: the browser still holds the old stream's id.
    async with running_server() as running:
        await running.create_consumer(["news"], id="tab-7")
        await running.publish("news", "m1")
        await running.publish("news", "m2")
        client, _ = await connect(running, "tab-7", headers={"Last-Event-ID": "999"})
        assert topic_frames(await client.messages(2)) == [(1, "news", "m1"), (2, "news", "m2")]
        client.close()


def _assert_resume_gap(frame: Frame, first: int, lost: int) -> None:
    assert frame.id is None
    assert (frame.event, frame.topic) == ("message", "/unifrost/error")
    error = frame.inner["error"]
    assert error["code"] == "resume-gap"
    assert isinstance(error["message"], str) and error["message"]
    assert (error["first_available_id"], error["lost"]) == (first, lost)


async def _gap_case(resume: dict[str, Any]) -> None:
    async with running_server(buffer=BufferSettings(max_messages=3)) as running:
        consumer_id = await running.create_consumer(["news"])
        client, _ = await connect(running, consumer_id)
        client.close()
        await wait_disconnected(running, consumer_id)
        for i in range(1, 7):
            await running.publish("news", f"m{i}")

        again, _ = await connect(running, consumer_id, **resume)
        _assert_resume_gap(await again.data_frame(), first=4, lost=3)
        replay = await again.messages(3)
        assert topic_frames(replay) == [(4, "news", "m4"), (5, "news", "m5"), (6, "news", "m6")]
        await running.publish("news", "m7")
        assert topic_frames([await again.data_frame()]) == [(7, "news", "m7")]
        again.close()


async def test_resume_gap_with_last_event_id() -> None:
    await _gap_case({"headers": {"Last-Event-ID": "0"}})


async def test_resume_gap_without_header() -> None:
    await _gap_case({})


# --- takeover -----------------------------------------------------------------------------


async def test_second_stream_takes_over_without_loss_or_duplicates() -> None:
    async with running_server() as running:
        consumer_id = await running.create_consumer(["news"])
        first, _ = await connect(running, consumer_id)
        total = 30
        switch, switched = asyncio.Event(), asyncio.Event()

        async def publisher() -> None:
            for i in range(1, total + 1):
                await running.publish("news", f"m{i}")
                if i == 10:
                    switch.set()  # messages 11-20 race the takeover
                if i == 20:
                    await switched.wait()  # 21-30 surely follow it
                await asyncio.sleep(0.001)

        task = asyncio.create_task(publisher())
        await switch.wait()
        second = await running.stream(consumer_id)  # no Last-Event-ID
        switched.set()
        await task
        assert second.status == 200
        await second.opening()

        first_frames: list[Frame] = []
        while True:
            frame = await first.data_frame()
            if frame.topic == "/unifrost/closed":
                break
            first_frames.append(frame)
        assert frame.id is None
        assert (frame.event, frame.decoded) == ("message", ["/unifrost/closed", "replaced"])
        assert await first.at_eof()

        got = topic_frames(first_frames)
        got += topic_frames(await second.messages(total - len(first_frames)))
        assert got == [(i, "news", f"m{i}") for i in range(1, total + 1)]
        assert len(first_frames) >= 10  # the first stream was live until the switch
        assert len(first_frames) <= 20  # the second one took over the rest
        await running.publish("news", "after")
        assert topic_frames([await second.data_frame()]) == [(total + 1, "news", "after")]
        assert await metric(running, "unifrost_connections_closed_total", reason="replaced") == 1
        second.close()


# --- delete -------------------------------------------------------------------------------


async def test_delete_closes_stream_and_consumer(server: Running) -> None:
    consumer_id = await server.create_consumer(["news"])
    client, _ = await connect(server, consumer_id)
    await server.publish("news", "m1")
    assert topic_frames([await client.data_frame()]) == [(1, "news", "m1")]

    response = await server.api("DELETE", f"/consumers/{consumer_id}")
    assert response.status == 204
    assert response.body == b""
    closed = await client.data_frame()
    assert closed.id is None
    assert (closed.event, closed.decoded) == ("message", ["/unifrost/closed", "consumer closed"])
    assert await client.at_eof()

    again = await server.api("DELETE", f"/consumers/{consumer_id}")
    assert again.status == 404
    assert again.json()["error"]["code"] == "not-found"
    assert await consumer_status(server, consumer_id) == 404

    reconnect = await server.stream(consumer_id)
    assert reconnect.status == 404
    assert reconnect.error_json()["error"]["code"] == "not-found"
    assert await metric(server, "unifrost_consumers_evicted_total", reason="deleted") == 1.0
    assert await metric(server, "unifrost_consumers_evicted_total", reason="ttl") == 0.0


# --- shutdown -----------------------------------------------------------------------------


async def test_shutdown_says_goodbye_to_every_stream() -> None:
    async with running_server(retry=0.5) as running:
        clients = []
        for topic in ("a", "b", "c"):
            consumer_id = await running.create_consumer([topic])
            client, _ = await connect(running, consumer_id)
            clients.append(client)
        await running.publish("a", "last")
        assert topic_frames([await clients[0].data_frame()]) == [(1, "a", "last")]

        stopping = asyncio.create_task(running.server.stop())
        for client in clients:
            retry = await client.frame()
            assert retry.retry is not None and 500 <= retry.retry <= 1000, retry
            assert retry.data is None
            closed = await client.data_frame()
            assert closed.id is None
            assert closed.decoded == ["/unifrost/closed", "server shutting down"]
            assert await client.at_eof()
        await asyncio.wait_for(stopping, 3.0)
        try:  # the listeners no longer accept connections
            await running.stream(None)
        except OSError:
            pass
        else:
            raise AssertionError("the public listener still accepts connections")


async def test_delete_racing_a_vanished_client_counts_one_close() -> None:
    async with running_server() as running:
        consumer_id = await running.create_consumer(["news"])
        client, _ = await connect(running, consumer_id)
        sock = client._writer.get_extra_info("socket") if client._writer else None
        assert sock is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        await asyncio.sleep(0)  # the socket closes (RST sent); the server has not polled yet
        assert running.manager.delete(consumer_id)
        await asyncio.sleep(0.05)
        assert await metric(running, "unifrost_connections") == 0
        closed = [
            await metric(running, "unifrost_connections_closed_total", reason=reason)
            for reason in ("client", "consumer_closed")
        ]
        assert sum(closed) == 1
