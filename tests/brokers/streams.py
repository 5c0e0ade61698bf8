"""SSE helpers shared by the broker tests: open a stream, read its frames.

Every stream opened through :func:`stream_of` or :func:`open_stream` is dropped
when its test ends (``tests/brokers/conftest.py``), passed or not.
"""

from __future__ import annotations

import time

from tests.support import Frame, Running, SseClient, metric

opened: list[SseClient] = []


def drop_opened() -> None:
    while opened:
        opened.pop().close()


async def stream_of(running: Running, consumer_id: str) -> SseClient:
    stream = await running.stream(consumer_id)
    opened.append(stream)
    return stream


async def open_stream(running: Running, topics: list[str]) -> SseClient:
    """A new consumer of ``topics`` with an open stream, read past its opening."""
    consumer_id = await running.create_consumer(topics)
    stream = await stream_of(running, consumer_id)
    assert stream.status == 200
    await stream.opening()
    return stream


def assert_message(frame: Frame, event_id: int, topic: str, payload: str) -> None:
    assert (frame.id, frame.event, frame.decoded) == (str(event_id), "message", [topic, payload])


def error_code(frame: Frame) -> str:
    assert frame.topic == "/unifrost/error", frame
    return str(frame.inner["error"]["code"])


async def assert_outage_seen(running: Running, stream: SseClient, topic: str) -> None:
    """The broker just went away: the stream is told, readiness and publishing refuse."""
    assert error_code(await stream.data_frame()) == "broker-unavailable"
    assert (await running.public_api("GET", "/readyz")).status == 503
    assert await metric(running, "unifrost_broker_up") == 0
    started = time.monotonic()
    response = await running.api("POST", f"/publish?topic={topic}", "during")
    assert response.status == 503  # refused at once, not buffered
    assert time.monotonic() - started < 1


async def assert_recovery_seen(running: Running, stream: SseClient) -> None:
    """The broker is back: the same stream is told, once, and the service is ready."""
    assert error_code(await stream.data_frame(timeout=10)) == "broker-recovered"
    assert (await running.public_api("GET", "/readyz")).status == 200
    assert await metric(running, "unifrost_broker_up") == 1
    assert await metric(running, "unifrost_broker_reconnects_total") == 1
