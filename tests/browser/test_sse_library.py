"""The stream read by an independent SSE parser (httpx-sse from PyPI), not our own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.support import Running, running_server

TIMEOUT = 5.0


async def next_event(events: AsyncIterator[ServerSentEvent]) -> ServerSentEvent:
    while True:
        event = await asyncio.wait_for(anext(events), TIMEOUT)
        if event.data or event.event != "message":  # skip a bare retry / heartbeat
            return event


def frame(event: ServerSentEvent) -> list[Any]:
    value = json.loads(event.data)
    assert isinstance(value, list) and len(value) == 2
    return value


async def test_frames_ids_resume_and_close_through_httpx_sse() -> None:
    async with running_server(retry=0.25) as running, httpx.AsyncClient(timeout=TIMEOUT) as http:
        consumer_id = await running.create_consumer(["orders", "chat"])
        url = f"http://127.0.0.1:{running.public[1]}/events"
        async with aconnect_sse(http, "GET", url, params={"id": consumer_id}) as source:
            assert source.response.status_code == 200
            assert source.response.headers["content-type"].startswith("text/event-stream")
            events = source.aiter_sse()
            retry = await asyncio.wait_for(anext(events), TIMEOUT)
            assert (retry.retry, retry.data) == (250, "")
            info = await next_event(events)
            assert (info.event, info.id) == ("message", "")
            topic, inner = frame(info)
            assert topic == "/unifrost/info"
            assert json.loads(inner)["subscriptions"] == ["chat", "orders"]
            assert json.loads(inner)["config"]["consumer_id"] == consumer_id

            await running.publish("orders", "order 1\nsecond line")
            await running.publish("chat", "hi ✓")
            first, second = await next_event(events), await next_event(events)
            assert (first.event, first.id, frame(first)) == (
                "message",
                "1",
                ["orders", "order 1\nsecond line"],
            )
            assert (second.id, frame(second)) == ("2", ["chat", "hi ✓"])

        await wait_detached(running, consumer_id)
        await running.publish("orders", "while away")
        headers = {"Last-Event-ID": "1"}
        params = {"id": consumer_id}
        async with aconnect_sse(http, "GET", url, params=params, headers=headers) as source:
            events = source.aiter_sse()
            assert frame(await next_event(events))[0] == "/unifrost/info"
            replayed = [await next_event(events), await next_event(events)]
            assert [(e.id, frame(e)) for e in replayed] == [
                ("2", ["chat", "hi ✓"]),
                ("3", ["orders", "while away"]),
            ]
            deleted = await running.api("DELETE", f"/consumers/{consumer_id}")
            assert deleted.status == 204
            closed = await next_event(events)
            # No id line of its own: the parser keeps the last id, as the SSE spec says.
            assert (closed.id, frame(closed)) == ("3", ["/unifrost/closed", "consumer closed"])
            rest = [e async for e in events]  # the stream ends
            assert [e for e in rest if e.data] == []


async def test_topic_event_names_through_httpx_sse() -> None:
    async with (
        running_server(event_name="topic") as running,
        httpx.AsyncClient(timeout=TIMEOUT) as http,
    ):
        consumer_id = await running.create_consumer(["news/eu"])
        url = f"http://127.0.0.1:{running.public[1]}/events"
        async with aconnect_sse(http, "GET", url, params={"id": consumer_id}) as source:
            events = source.aiter_sse()
            info = await next_event(events)
            assert info.event == "message" and frame(info)[0] == "/unifrost/info"
            await running.publish("news/eu", "headline")
            event = await next_event(events)
            assert (event.event, event.id, frame(event)) == (
                "news/eu",
                "1",
                ["news/eu", "headline"],
            )


async def wait_detached(running: Running, consumer_id: str) -> None:
    for _ in range(200):
        if running.manager.get(consumer_id).stream is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the stream did not close")
