"""SSE helpers shared by the broker tests: open a stream, read its frames.

Every stream opened through :func:`stream_of` or :func:`open_stream` is dropped
when its test ends (``tests/brokers/conftest.py``), passed or not.
"""

from __future__ import annotations

from tests.support import Frame, Running, SseClient

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
