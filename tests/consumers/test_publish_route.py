"""``POST /publish`` is answered before the admin application's routing.

The behaviour of the route itself (limits, topics, broker errors) is covered
with the rest of the control API; these tests pin what answering it outside a
``RequestHandler`` must not lose: keep-alive with other routes on the same
connection, faults as JSON 500s, auth, metrics and the request log line.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from service import sse
from service.consumers.connection import WriteBatcher
from service.web.router import Router
from tests.support import (
    DEFAULT_TIMEOUT,
    Running,
    assert_json_error,
    captured_logs,
    metric,
    running_server,
)


def request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEFAULT_TIMEOUT)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def test_the_admin_listener_is_served_through_the_router(server: Running) -> None:
    assert server.server._servers[1].request_callback.__class__ is Router


async def test_publish_and_other_routes_share_one_keep_alive_connection(server: Running) -> None:
    consumer_id = await server.create_consumer(["t"])
    reader, writer = await asyncio.open_connection(*server.admin)
    try:
        exchanges: list[tuple[bytes, int]] = [
            (request("POST", "/publish?topic=t", b"one"), 202),
            (request("GET", f"/consumers/{consumer_id}"), 200),
            (request("GET", "/publish?topic=t"), 405),
            (request("POST", "/publish?topic=t", b"two"), 202),
            (request("POST", "/publish?topic=", b"bad"), 400),
            (request("POST", "/publish?topic=t", b"three"), 202),
        ]
        answers = []
        for raw, expected in exchanges:
            writer.write(raw)
            status, headers, body = await read_response(reader)
            answers.append(status)
            assert headers["content-type"].startswith("application/json"), headers
            if status == 202:
                assert "date" in headers
                assert json.loads(body)["topic"] == "t"
            assert status == expected, body
        assert answers == [202, 200, 405, 202, 400, 202]
        # Pipelined: both requests written before either answer is read.
        writer.write(request("POST", "/publish?topic=t", b"four") + request("GET", "/healthz"))
        assert (await read_response(reader))[0] == 202
        assert (await read_response(reader))[0] == 200
    finally:
        writer.close()
    described = (await server.api("GET", f"/consumers/{consumer_id}")).json()
    assert described["buffered"] == 4


@pytest.mark.parametrize("inline", [True, False], ids=["in-process", "awaited"])
async def test_a_fault_while_publishing_is_a_json_500_and_the_server_goes_on(
    server: Running, inline: bool
) -> None:
    """Both ways a driver publishes: at once (in-process) or awaited (network brokers)."""

    def broken_now(topic: str, body: bytes) -> bool:
        raise RuntimeError("secret internal detail")

    async def broken(topic: str, body: bytes) -> None:
        raise RuntimeError("secret internal detail")

    def never_now(topic: str, body: bytes) -> bool:
        return False

    broker: Any = server.broker
    original = broker.publish, broker.publish_now
    if inline:
        broker.publish_now = broken_now
    else:
        broker.publish, broker.publish_now = broken, never_now
    try:
        response = await server.api("POST", "/publish?topic=t", "x")
    finally:
        broker.publish, broker.publish_now = original
    error = assert_json_error(response, 500)
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text
    assert error["code"] == "error"
    assert (await server.api("POST", "/publish?topic=t", "x")).status == 202
    assert await metric(server, "unifrost_http_requests_total", handler="publish", code="500") == 1


async def test_an_awaited_publish_maps_broker_errors(server: Running) -> None:
    from service.brokers.base import BrokerError, BrokerUnavailable

    async def refused(topic: str, body: bytes) -> None:
        raise BrokerError("no such topic")

    async def down(topic: str, body: bytes) -> None:
        raise BrokerUnavailable("reconnecting")

    def never_now(topic: str, body: bytes) -> bool:
        return False

    broker: Any = server.broker
    original = broker.publish, broker.publish_now
    try:
        broker.publish_now = never_now
        broker.publish = refused
        assert_json_error(await server.api("POST", "/publish?topic=t", "x"), 502, "broker-error")
        broker.publish = down
        response = await server.api("POST", "/publish?topic=t", "x")
        assert_json_error(response, 503, "broker-unavailable")
        broker.publish = original[0]
        consumer_id = await server.create_consumer(["t"])
        assert (await server.api("POST", "/publish?topic=t", "awaited")).status == 202
        described = await server.api("GET", f"/consumers/{consumer_id}")
        assert described.json()["buffered"] == 1
    finally:
        broker.publish, broker.publish_now = original


async def test_token_is_checked_before_anything_else() -> None:
    async with running_server(admin_token="s3cret") as running:
        # Neither the bad topic nor the oversized declared body is looked at first.
        unauthorized = await running.api(
            "POST", "/publish?topic=", headers={"Content-Length": str(1 << 30)}, raw_body=b""
        )
        assert_json_error(unauthorized, 401, "unauthorized")
        assert unauthorized.headers["www-authenticate"] == 'Bearer realm="unifrost"'
        wrong = await running.api(
            "POST", "/publish?topic=t", "x", headers={"Authorization": "Bearer nope"}
        )
        assert_json_error(wrong, 401)
        right = await running.api(
            "POST", "/publish?topic=t", "x", headers={"Authorization": "Bearer s3cret"}
        )
        assert right.status == 202, right.text


async def test_publishes_are_counted_timed_and_logged(server: Running) -> None:
    with captured_logs() as buffer:
        await server.publish("t", "x")
        assert_json_error(await server.api("POST", "/publish", "x"), 400)
    records: list[dict[str, Any]] = [json.loads(line) for line in buffer.getvalue().splitlines()]
    logged = [r for r in records if r["event"] == "http.request" and r["path"] == "/publish"]
    assert [(r["method"], r["status"]) for r in logged] == [("POST", 202), ("POST", 400)]
    assert all(r["remote_ip"] == "127.0.0.1" and r["duration_ms"] >= 0 for r in logged)
    assert await metric(server, "unifrost_http_requests_total", handler="publish", code="202") == 1
    assert await metric(server, "unifrost_http_requests_total", handler="publish", code="400") == 1
    assert (
        await metric(server, "unifrost_http_request_duration_seconds_count", handler="publish") == 2
    )


async def test_expect_continue_is_honoured(server: Running) -> None:
    reader, writer = await asyncio.open_connection(*server.admin)
    try:
        writer.write(
            b"POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEFAULT_TIMEOUT)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        writer.write(b"hello")
        status, _headers, body = await read_response(reader)
        assert status == 202, body
    finally:
        writer.close()


async def test_a_client_that_leaves_mid_body_costs_nothing(server: Running) -> None:
    consumer_id = await server.create_consumer(["t"])
    reader, writer = await asyncio.open_connection(*server.admin)
    writer.write(b"POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npart")
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.1)
    assert (await server.api("GET", f"/consumers/{consumer_id}")).json()["buffered"] == 0
    assert (await server.api("POST", "/publish?topic=t", "x")).status == 202
    del reader


async def test_a_publish_writes_its_frames_itself_and_leaves_no_flush_for_later(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await server.stream(await server.create_consumer(["t"]))
    await client.opening()
    batcher = server.manager.batcher
    loop = asyncio.get_running_loop()
    scheduled: list[Any] = []
    call_soon = loop.call_soon

    def recording_call_soon(callback: Any, *args: Any, **kwargs: Any) -> Any:
        scheduled.append(callback)
        return call_soon(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon", recording_call_soon)
    await server.publish("t", "x")
    monkeypatch.undo()
    # A flush scheduled for the end of the iteration would find nothing left to write.
    assert [cb for cb in scheduled if getattr(cb, "__self__", None) is batcher] == []
    frame = await client.frame()
    assert (frame.id, frame.decoded) == ("1", ["t", "x"])


async def test_an_in_process_publish_writes_each_frame_as_it_fans_out(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = [await server.stream(await server.create_consumer(["t"])) for _ in range(2)]
    for client in clients:
        await client.opening()
    queued: list[Any] = []
    mark = WriteBatcher.mark

    def recording_mark(self: WriteBatcher, conn: Any) -> None:
        queued.append(conn)
        mark(self, conn)

    monkeypatch.setattr(WriteBatcher, "mark", recording_mark)
    await server.publish("t", "x")
    assert queued == []  # each frame went to its socket during the fan-out
    for client in clients:
        frame = await client.frame()
        assert (frame.id, frame.decoded) == ("1", ["t", "x"])


async def test_an_in_process_publish_queues_behind_frames_already_queued(
    server: Running,
) -> None:
    consumer_id = await server.create_consumer(["t"])
    client = await server.stream(consumer_id)
    await client.opening()
    stream = server.manager.get(consumer_id).stream
    stream.send_control(sse.error_frame(sse.BROKER_RECOVERED, "queued first"))
    server.manager.batcher.write_through(server.broker.publish_now, "t", b"x")
    first, second = await client.frame(), await client.frame()
    assert first.inner["error"]["message"] == "queued first"
    assert (second.id, second.decoded) == ("1", ["t", "x"])


async def test_frames_queued_before_a_failing_fan_out_are_still_written() -> None:
    batcher = WriteBatcher()
    written: list[str] = []

    class Connection:
        def flush(self) -> None:
            written.append("flushed")

    def failing_fan_out(topic: str, body: bytes) -> bool:
        batcher.mark(Connection())  # type: ignore[arg-type]
        raise RuntimeError("driver fault")

    with pytest.raises(RuntimeError):
        batcher.write_through(failing_fan_out, "t", b"x")
    assert written == ["flushed"]
    # Outside write_through, frames wait for the end of the iteration again.
    batcher.mark(Connection())  # type: ignore[arg-type]
    assert written == ["flushed"]
    await asyncio.sleep(0)
    assert written == ["flushed", "flushed"]
