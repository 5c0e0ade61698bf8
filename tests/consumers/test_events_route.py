"""``GET /events`` is opened before the public application's routing.

Stream behaviour is covered by ``test_stream.py`` and the rest of the suite
(every stream there goes through this route). These tests pin the split: which
requests are opened without a ``RequestHandler``, that every other one reaches
``StreamHandler`` unchanged and gets its answer, that a stream opens the same
either way, and that failures while creating a consumer are still answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from service.config import ClientSubscriptionSettings, LimitSettings
from service.consumers.manager import ConsumerManager
from service.consumers.stream import StreamHandler
from service.web.router import Router
from tests.support import (
    DEFAULT_TIMEOUT,
    Running,
    SseClient,
    captured_logs,
    log_records,
    metric,
    running_server,
    wait_for,
)


@pytest.fixture
def handler_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The request URIs ``StreamHandler.get`` served."""
    calls: list[str] = []
    original = StreamHandler.get

    async def counted(self: StreamHandler) -> None:
        calls.append(self.request.uri or "")
        await original(self)

    monkeypatch.setattr(StreamHandler, "get", counted)
    yield calls


@pytest.fixture
async def open_server() -> AsyncIterator[Running]:
    allow = ClientSubscriptionSettings(enabled=False, allow=("news", "chat.*"))
    async with running_server(auto_create_consumers=True, client_subscriptions=allow) as running:
        yield running


async def until(check: Callable[[], bool]) -> None:
    async def holds() -> bool:
        return check()

    await wait_for(holds)


async def open_stream(running: Running, query: str, **headers: str) -> SseClient:
    return await SseClient(running.public).connect(None, query, headers=headers)


async def test_the_public_listener_is_served_through_the_router(server: Running) -> None:
    router = server.server._servers[0].request_callback
    assert isinstance(router, Router)
    assert list(router.routes) == [("GET", "/events")]


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("id={id}", {}),
        ("id={id}&last_event_id=0", {}),
        ("id={id}&topics=news,chat.x", {}),
        ("id={id}", {"Last-Event-ID": "3"}),
        ("id={id}&last_event_id=x", {"Last-Event-ID": "3"}),  # the handler refuses x: 400
        ("topics=news,chat.room", {}),
        ("topics=", {}),
    ],
)
async def test_plain_requests_open_without_the_handler(
    open_server: Running, handler_calls: list[str], query: str, headers: dict[str, str]
) -> None:
    consumer_id = await open_server.create_consumer(["news"])
    client = await open_stream(open_server, query.format(id=consumer_id), **headers)
    try:
        if "last_event_id=x" in query:
            assert client.status == 400
            assert len(handler_calls) == 1
            return
        assert client.status == 200, client.error_body
        _retry, info = await client.opening()
        assert info.topic == "/unifrost/info"
        assert handler_calls == []
    finally:
        client.close()


@pytest.mark.parametrize(
    ("query", "headers", "status", "code"),
    [
        ("id=nobody", {}, 404, "not-found"),
        ("id=has%20space", {}, 404, "not-found"),
        ("id=", {}, 200, None),  # empty: the handler creates a consumer, as it always has
        ("id={id}&last_event_id=-1", {}, 400, "bad-request"),
        ("id={id}&last_event_id=%201", {}, 200, None),  # Tornado strips the space
        ("id={id}&topics=a%00b", {}, 400, "bad-topic"),
        ("id={id}&topics=%ff", {}, 400, "bad-topic"),
        ("topics=secret", {}, 403, "forbidden"),
        ("id={id}", {"Content-Length": "2"}, 200, None),  # a GET with a body
    ],
)
async def test_other_requests_reach_the_handler(
    open_server: Running,
    handler_calls: list[str],
    query: str,
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    consumer_id = await open_server.create_consumer(["news"])
    raw_query = query.format(id=consumer_id)
    if "Content-Length" in headers:
        client = await _stream_with_body(open_server, raw_query, b"hi")
    else:
        client = await open_stream(open_server, raw_query, **headers)
    try:
        assert client.status == status, client.error_body
        if code is not None:
            assert client.error_json()["error"]["code"] == code
        else:
            _retry, info = await client.opening()
            assert info.topic == "/unifrost/info"
        assert handler_calls == [f"/events?{raw_query}"]
    finally:
        client.close()


async def _stream_with_body(running: Running, query: str, body: bytes) -> SseClient:
    client = SseClient(running.public)
    reader, writer = await asyncio.open_connection(*running.public)
    writer.write(
        f"GET /events?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEFAULT_TIMEOUT)
    client._reader, client._writer = reader, writer
    client.status = int(head.split(b" ", 2)[1])
    return client


async def test_auto_created_streams_need_the_setting(handler_calls: list[str]) -> None:
    async with running_server(auto_create_consumers=False) as running:
        client = await open_stream(running, "topics=news")
        assert client.status == 400
        assert client.error_json()["error"]["code"] == "bad-request"
        assert handler_calls == ["/events?topics=news"]
        client.close()


async def test_a_draining_server_passes_streams_to_the_handler(
    server: Running, handler_calls: list[str]
) -> None:
    consumer_id = await server.create_consumer(["news"])
    server.server.ctx.state.draining = True  # type: ignore[union-attr]
    client = await server.stream(consumer_id)
    assert client.status == 503
    assert handler_calls == [f"/events?id={consumer_id}"]
    client.close()
    server.server.ctx.state.draining = False  # type: ignore[union-attr]


async def test_a_stream_opens_the_same_either_way(
    open_server: Running, handler_calls: list[str]
) -> None:
    consumer_id = await open_server.create_consumer(["news", "chat.a"])
    await open_server.publish("news", "one")
    await open_server.publish("chat.a", "two")
    openings: list[tuple[dict[str, str], list[Any]]] = []
    # " 0" is left to the handler (Tornado strips it); "0" is opened before routing.
    for last_event_id in ("0", "%200"):
        client = await open_stream(
            open_server, f"id={consumer_id}&last_event_id={last_event_id}", Origin="https://x"
        )
        assert client.status == 200
        frames = [await client.frame() for _ in range(4)]
        client.close()
        await until(lambda: open_server.manager.connected_count == 0)
        headers = {k: v for k, v in client.headers.items() if k != "date"}
        openings.append((headers, [(f.id, f.event, f.data, f.retry) for f in frames]))
    assert len(handler_calls) == 1
    assert openings[0] == openings[1]
    assert [frame[0] for frame in openings[0][1]] == [None, None, "1", "2"]


async def test_cors_headers_on_streams_opened_before_routing(handler_calls: list[str]) -> None:
    async with running_server(cors_origins=("https://app.example",)) as running:
        consumer_id = await running.create_consumer(["news"])
        client = await running.stream(consumer_id, headers={"Origin": "https://app.example"})
        assert client.headers["access-control-allow-origin"] == "https://app.example"
        assert client.headers["access-control-allow-credentials"] == "true"
        assert client.headers["vary"] == "Origin"
        client.close()
        other = await running.stream(consumer_id, headers={"Origin": "https://other.example"})
        assert "access-control-allow-origin" not in other.headers
        other.close()
        assert handler_calls == []


def slow_create(monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
    original = ConsumerManager.create

    async def create(self: ConsumerManager, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(delay)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(ConsumerManager, "create", create)


@pytest.mark.parametrize("query", ["topics=news", "id=&topics=news"])
async def test_a_client_gone_while_its_consumer_is_created(
    open_server: Running, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    # The second query is answered by StreamHandler: both ways must cope.
    slow_create(monkeypatch, 0.2)
    with captured_logs() as logs:
        reader, writer = await asyncio.open_connection(*open_server.public)
        writer.write(f"GET /events?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        writer.close()
        await until(lambda: len(open_server.manager) == 1)
        await asyncio.sleep(0.05)
    assert await reader.read() == b""
    assert open_server.manager.connected_count == 0
    assert await metric(open_server, "unifrost_connections") == 0
    assert await metric(open_server, "unifrost_connections_opened_total") == 0
    events = [(r["event"], r["level"]) for r in log_records(logs.getvalue())]
    assert ("consumer.created", "info") in events
    assert [e for e in events if e[1] != "info"] == []


async def test_a_consumer_limit_reached_meanwhile_is_answered(
    handler_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    allow = ClientSubscriptionSettings(enabled=False, allow=("*",))
    limits = LimitSettings(max_consumers=1)
    async with running_server(
        auto_create_consumers=True, client_subscriptions=allow, limits=limits
    ) as running:
        slow_create(monkeypatch, 0.2)
        # Both pass the limit check before either consumer exists.
        first, second = await asyncio.gather(
            open_stream(running, "topics=a"), open_stream(running, "topics=b")
        )
        assert sorted([first.status, second.status]) == [200, 429]
        refused = first if first.status == 429 else second
        assert refused.error_json()["error"]["code"] == "limit-exceeded"
        assert len(handler_calls) == 1
        assert len(running.manager) == 1
        first.close()
        second.close()


async def test_draining_that_begins_while_a_consumer_is_created(
    open_server: Running, handler_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_create(monkeypatch, 0.2)
    opening = asyncio.ensure_future(open_stream(open_server, "topics=news"))
    await until(lambda: open_server.manager.connected_count == 0 and not opening.done())
    await asyncio.sleep(0.05)
    open_server.server.ctx.state.draining = True  # type: ignore[union-attr]
    client = await opening
    assert client.status == 503
    assert handler_calls == ["/events?topics=news"]
    client.close()
    open_server.server.ctx.state.draining = False  # type: ignore[union-attr]


async def test_a_stream_opened_by_the_handler_owns_its_socket(
    open_server: Running, handler_calls: list[str]
) -> None:
    consumer_id = await open_server.create_consumer(["news"])
    # " 0" is left to the handler: the socket comes from Tornado's HTTP layer.
    client = await open_stream(open_server, f"id={consumer_id}&last_event_id=%200")
    assert client.status == 200
    await client.opening()
    assert len(handler_calls) == 1
    for n in range(3):  # live frames reach it...
        await open_server.publish("news", f"live {n}")
        frame = await client.frame()
        assert (frame.decoded, frame.id) == (["news", f"live {n}"], str(n + 1))
    client.close()  # ...and its hang-up is noticed without a write
    await until(lambda: open_server.manager.connected_count == 0)
    assert await metric(open_server, "unifrost_connections_closed_total", reason="client") == 1


async def test_a_client_gone_before_its_stream_opens_leaves_the_loop_clean(
    server: Running, handler_calls: list[str]
) -> None:
    # The front reads the request and the hang-up behind it together, and hands the
    # socket over still registered with the loop: the opening must drop that
    # registration with the socket, or the next connection given the same
    # descriptor would never be read.
    consumer_id = await server.create_consumer(["news"])
    request = f"GET /events?id={consumer_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    for _ in range(5):
        reader, writer = await asyncio.open_connection(*server.public)
        writer.write(request)
        writer.close()  # request and hang-up reach the server before it reads either
        assert await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT) == b""
        client = await server.stream(consumer_id)
        assert client.status == 200
        await client.opening()
        await server.publish("news", "still served")
        assert (await client.frame()).decoded == ["news", "still served"]
        client.close()
        await until(lambda: server.manager.connected_count == 0)
    assert handler_calls == []
    assert await metric(server, "unifrost_connections_opened_total") == 5
