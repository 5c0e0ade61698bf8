"""The front door: plainly valid hot requests are answered straight from the socket.

Every other request goes, with the connection and the bytes the front read, to
Tornado's HTTP layer, which must answer it exactly as if the front were not there. These
tests count the hand-overs (``FrontServer.pass_on``) so each case is known to
take the path it claims, and check the answers and the messages delivered.
"""

from __future__ import annotations

import asyncio
import gc
import select
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from service.web import front
from service.web.front import (
    HEAD_CACHE_SIZE,
    READ_BYTES,
    FrontConnection,
    FrontServer,
    _parse,
    _parse_head,
)
from tests.consumers.test_publish_route import read_response, request
from tests.support import DEFAULT_TIMEOUT, Running, captured_logs, running_server


@pytest.fixture
def passed_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """One entry per connection handed to Tornado's HTTP layer."""
    calls: list[int] = []
    original = FrontServer.pass_on

    def counted(self: FrontServer, stream: Any, address: Any) -> None:
        calls.append(1)
        original(self, stream, address)

    monkeypatch.setattr(FrontServer, "pass_on", counted)
    yield calls


@pytest.fixture
async def consumer_id(server: Running, passed_on: list[int]) -> str:
    """A consumer of ``t``, made before hand-overs are counted (a control-API call)."""
    created = await server.create_consumer(["t"])
    passed_on.clear()
    return created


async def exchange(running: Running, *payloads: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Write ``payloads`` one after another on one connection, each after the last answer."""
    reader, writer = await asyncio.open_connection(*running.admin)
    try:
        answers = []
        for payload in payloads:
            writer.write(payload)
            answers.append(await read_response(reader))
        return answers
    finally:
        writer.close()


async def received(running: Running, consumer_id: str) -> list[bytes]:
    consumer = running.manager.get(consumer_id)
    return [frame.split(b"data: ", 1)[1] for frame in consumer._frames]


async def test_keep_alive_publishes_stay_at_the_front(
    server: Running, consumer_id: str, passed_on: list[int]
) -> None:
    answers = await exchange(
        server, *(request("POST", "/publish?topic=t", b"m%d" % n) for n in range(5))
    )
    assert [status for status, _h, _b in answers] == [202] * 5
    assert answers[0][2] == b'{"topic": "t", "bytes": 2}'
    assert "connection" not in answers[0][1]
    assert passed_on == []
    assert await received(server, consumer_id) == [b'["t","m%d"]\n\n' % n for n in range(5)]


async def test_another_route_hands_the_connection_to_tornado(
    server: Running, consumer_id: str, passed_on: list[int]
) -> None:
    answers = await exchange(
        server,
        request("POST", "/publish?topic=t", b"one"),
        request("GET", f"/consumers/{consumer_id}"),
        request("POST", "/publish?topic=t", b"two"),  # now through Tornado
    )
    assert [status for status, _h, _b in answers] == [202, 200, 202]
    assert passed_on == [1]
    assert await received(server, consumer_id) == [b'["t","one"]\n\n', b'["t","two"]\n\n']


async def test_pipelined_requests_are_answered_in_order(
    server: Running, consumer_id: str, passed_on: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(*server.admin)
    writer.write(
        request("POST", "/publish?topic=t", b"one")
        + request("POST", "/publish?topic=t", b"two")
        + request("GET", "/healthz")
        + request("POST", "/publish?topic=t", b"three")
    )
    statuses = [(await read_response(reader))[0] for _ in range(4)]
    writer.close()
    assert statuses == [202, 202, 200, 202]
    assert passed_on == [1]  # at the health check
    assert await received(server, consumer_id) == [
        b'["t","one"]\n\n',
        b'["t","two"]\n\n',
        b'["t","three"]\n\n',
    ]


async def test_a_pipelined_request_cut_short_goes_to_tornado_with_what_was_read(
    server: Running, consumer_id: str, passed_on: list[int]
) -> None:
    # The front reads the first request and the start of the second at once; Tornado
    # must then read the second from its start, the bytes the front read first.
    reader, writer = await asyncio.open_connection(*server.admin)
    second = request("POST", "/publish?topic=t", b"two")
    writer.write(request("POST", "/publish?topic=t", b"one") + second[:30])
    await writer.drain()
    first_status = (await read_response(reader))[0]
    await asyncio.sleep(0.05)
    writer.write(second[30:])
    second_status, _headers, body = await read_response(reader)
    writer.close()
    assert (first_status, second_status) == (202, 202)
    assert body == b'{"topic": "t", "bytes": 3}'
    assert passed_on == [1]
    assert await received(server, consumer_id) == [b'["t","one"]\n\n', b'["t","two"]\n\n']


async def test_pipelined_publishes_to_a_broker_that_is_awaited(
    server: Running, consumer_id: str, passed_on: list[int]
) -> None:
    # A network broker's publish is awaited: the next request (already here) waits
    # unread until the answer is out, then is served in turn.
    broker: Any = server.broker
    original = broker.publish, broker.publish_now

    async def slow(topic: str, body: bytes) -> None:
        await asyncio.sleep(0.02)
        assert original[1](topic, body)

    def never_now(topic: str, body: bytes) -> bool:
        return False

    broker.publish, broker.publish_now = slow, never_now
    try:
        reader, writer = await asyncio.open_connection(*server.admin)
        writer.write(b"".join(request("POST", "/publish?topic=t", b"%d" % n) for n in range(5)))
        statuses = [(await read_response(reader))[0] for _ in range(5)]
        writer.close()
    finally:
        broker.publish, broker.publish_now = original
    assert statuses == [202] * 5
    assert passed_on == []
    assert await received(server, consumer_id) == [b'["t","%d"]\n\n' % n for n in range(5)]


@pytest.mark.parametrize(
    "payload",
    [
        # HTTP/1.0
        b"POST /publish?topic=t HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
        # a chunked body
        b"POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        # bare line feeds: Tornado's parser takes them, ours does not
        b"POST /publish?topic=t HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc",
        # Expect: 100-continue
        b"POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Expect: 100-continue\r\n\r\nabc",
    ],
    ids=["http-1.0", "chunked", "bare-lf", "expect"],
)
async def test_unusual_requests_are_tornados(
    server: Running, consumer_id: str, passed_on: list[int], payload: bytes
) -> None:
    reader, writer = await asyncio.open_connection(*server.admin)
    writer.write(payload)
    status, _headers, _body = await read_response(reader)
    if status == 100:
        status, _headers, _body = await read_response(reader)
    writer.close()
    assert status == 202
    assert passed_on == [1]
    assert await received(server, consumer_id) == [b'["t","abc"]\n\n']


async def test_a_malformed_request_gets_tornados_400(server: Running, passed_on: list[int]) -> None:
    reader, writer = await asyncio.open_connection(*server.admin)
    writer.write(b"POST /publish?topic=t HTTP/1.1\r\nBad Header: x\r\nContent-Length: 1\r\n\r\nx")
    status, _headers, _body = await read_response(reader)
    writer.close()
    assert status == 400
    assert passed_on == [1]


async def test_a_request_that_arrives_in_pieces_is_tornados(
    server: Running, consumer_id: str, passed_on: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(*server.admin)
    whole = request("POST", "/publish?topic=t", b"split")
    writer.write(whole[:20])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(whole[20:])
    status, _headers, _body = await read_response(reader)
    writer.close()
    assert status == 202
    assert passed_on == [1]
    assert await received(server, consumer_id) == [b'["t","split"]\n\n']


@pytest.fixture
def post_heads() -> Iterator[Any]:
    """The front's cache of parsed ``POST`` heads, empty to begin with."""
    front._parse_post_head.cache_clear()
    yield front._parse_post_head
    front._parse_post_head.cache_clear()


async def test_a_publishers_repeated_head_is_parsed_once(
    server: Running, consumer_id: str, passed_on: list[int], post_heads: Any
) -> None:
    same_head = [request("POST", "/publish?topic=t", b"m%d" % n) for n in range(5)]
    longer = request("POST", "/publish?topic=t", b"longer")
    answers = await exchange(server, *same_head, longer)
    assert [status for status, _h, _b in answers] == [202] * 6
    assert answers[5][2] == b'{"topic": "t", "bytes": 6}'
    # The second Content-Length is another head.
    assert (post_heads.cache_info().misses, post_heads.cache_info().hits) == (2, 4)
    assert passed_on == []
    expected = [b'["t","m%d"]\n\n' % n for n in range(5)] + [b'["t","longer"]\n\n']
    assert await received(server, consumer_id) == expected


async def test_a_known_head_whose_body_has_not_arrived_is_tornados(
    server: Running, consumer_id: str, passed_on: list[int]
) -> None:
    whole = request("POST", "/publish?topic=t", b"first")
    assert [status for status, _h, _b in await exchange(server, whole)] == [202]
    reader, writer = await asyncio.open_connection(*server.admin)
    second = request("POST", "/publish?topic=t", b"again")
    writer.write(second[:-2])  # the same head as before, the body cut short
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(second[-2:])
    status, _headers, _body = await read_response(reader)
    writer.close()
    assert status == 202
    assert passed_on == [1]
    assert await received(server, consumer_id) == [b'["t","first"]\n\n', b'["t","again"]\n\n']


def test_only_publishers_heads_are_kept(post_heads: Any) -> None:
    stream = request("GET", "/events?id=abc")
    assert _parse(stream) is not None
    assert post_heads.cache_info().currsize == 0  # a stream opening is never seen twice
    publishes = [request("POST", f"/publish?topic={topic}", b"x") for topic in "abc"]
    for data in publishes:
        parsed = _parse(data)
        assert parsed is not None and parsed.body == b"x" and parsed.size == len(data)
    assert post_heads.cache_info().currsize == 3
    assert post_heads.cache_info().maxsize == HEAD_CACHE_SIZE


async def test_a_body_larger_than_the_front_reads_is_tornados(passed_on: list[int]) -> None:
    async with running_server(max_message_bytes=4 * READ_BYTES) as running:
        consumer_id = await running.create_consumer(["t"])
        passed_on.clear()
        body = b"x" * (2 * READ_BYTES)
        answers = await exchange(running, request("POST", "/publish?topic=t", body))
        assert answers[0][0] == 202
        assert passed_on == [1]
        assert await received(running, consumer_id) == [b'["t","%b"]\n\n' % body]


async def test_connection_close_is_honoured(server: Running, passed_on: list[int]) -> None:
    reader, writer = await asyncio.open_connection(*server.admin)
    writer.write(request("POST", "/publish?topic=t", b"x", Connection="close"))
    status, headers, _body = await read_response(reader)
    assert (status, headers["connection"]) == (202, "close")
    assert await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT) == b""
    writer.close()
    assert passed_on == []


async def test_errors_at_the_front_are_the_routes_own(passed_on: list[int]) -> None:
    async with running_server(max_message_bytes=100) as running:
        answers = await exchange(
            running,
            request("POST", "/publish?topic=", b"x"),
            request("POST", "/publish?topic=t", b"x" * 150),
        )
    assert [status for status, _h, _b in answers] == [400, 413]
    assert "connection" not in answers[0][1]
    assert answers[1][1]["connection"] == "close"
    assert passed_on == []


async def test_a_publisher_that_does_not_read_its_answers(
    server: Running, consumer_id: str, passed_on: list[int]
) -> None:
    # Tiny socket buffers fill at once: the front's answers no longer fit the
    # socket, the rest is buffered by Tornado's IOStream and the connection is its.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(server.admin)
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(request("POST", "/publish?topic=t", b"0"))
    await read_response(reader)
    (front,) = server.server._servers[1].fronts
    front.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    count = 1000
    writer.write(b"".join(request("POST", "/publish?topic=t", b"%d" % n) for n in range(1, count)))
    await asyncio.sleep(0.3)  # answers pile up unread
    statuses = [(await read_response(reader))[0] for _ in range(1, count)]
    writer.close()
    assert statuses == [202] * (count - 1)
    assert passed_on == [1]
    consumer = server.manager.get(consumer_id)
    assert consumer.last_id == count
    assert (await received(server, consumer_id))[-1] == b'["t","%d"]\n\n' % (count - 1)


async def test_answers_of_one_loop_iteration_are_written_together_at_its_end(
    server: Running, consumer_id: str
) -> None:
    admin = server.server._servers[1]
    clients = [socket.create_connection(server.admin) for _ in range(2)]
    try:
        for client in clients:  # a first exchange each: both connections wait at the front
            client.sendall(request("POST", "/publish?topic=t", b"warm"))
            async with asyncio.timeout(DEFAULT_TIMEOUT):
                while not pending(client):
                    await asyncio.sleep(0.001)
        fronts = sorted(admin.fronts, key=lambda f: f.address[1])
        assert len(fronts) == 2
        consumer = server.manager.get(consumer_id)
        delivered = consumer.last_id
        # One loop iteration, as the loop would run it: both requests are read and published...
        for n, client in enumerate(clients):
            client.send(request("POST", "/publish?topic=t", b"%d" % n))
        select.select([f.sock for f in fronts], [], [], DEFAULT_TIMEOUT)
        for f in fronts:
            f._readable()
        assert consumer.last_id == delivered + 2  # the fan-out did not wait
        # ...and neither answer has been written yet.
        assert [pending(client) for client in clients] == [b"", b""]
        await asyncio.sleep(0)  # the end of the iteration
        answers = [pending(client) for client in clients]
        assert all(answer.startswith(b"HTTP/1.1 202 Accepted\r\n") for answer in answers)
    finally:
        for client in clients:
            client.close()


def pending(sock: socket.socket) -> bytes:
    """What has arrived on ``sock`` and not been read (without waiting)."""
    try:
        return sock.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


async def test_a_client_that_hangs_up_between_requests_is_forgotten(server: Running) -> None:
    front = server.server._servers[1]
    await exchange(server, request("POST", "/publish?topic=t", b"x"))

    async def forgotten() -> None:
        while front.fronts:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(forgotten(), DEFAULT_TIMEOUT)


async def test_idle_connections_are_closed_after_the_idle_timeout(server: Running) -> None:
    front = server.server._servers[1]
    reader, writer = await asyncio.open_connection(*server.admin)
    writer.write(request("POST", "/publish?topic=t", b"x"))
    await read_response(reader)
    front._sweep()
    assert len(front.fronts) == 1  # not idle for long yet
    front.idle_timeout = 0.05
    await asyncio.sleep(0.1)
    front._sweep()
    assert await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT) == b""
    writer.close()


async def test_shutdown_closes_connections_waiting_at_the_front() -> None:
    async with running_server() as running:
        reader, writer = await asyncio.open_connection(*running.admin)
        writer.write(request("POST", "/publish?topic=t", b"x"))
        await read_response(reader)
        await running.server.stop()
        assert await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT) == b""
        writer.close()


async def test_streams_open_at_the_front(
    server: Running, consumer_id: str, passed_on: list[int]
) -> None:
    client = await server.stream(consumer_id)
    assert client.status == 200
    _retry, info = await client.opening()
    assert info.topic == "/unifrost/info"
    client.close()
    assert passed_on == []


async def test_a_stream_request_in_pieces_still_opens(
    server: Running, consumer_id: str, passed_on: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(*server.public)
    head = f"GET /events?id={consumer_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    writer.write(head[:10])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(head[10:])
    opening = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEFAULT_TIMEOUT)
    writer.close()
    assert opening.startswith(b"HTTP/1.1 200 OK")
    assert passed_on == [1]


def test_parsing_a_request_leaves_no_garbage_cycle() -> None:
    # A cycle per request would be traced by the garbage collector in bulk: pauses
    # of 100 ms and more at a few thousand publishes a second.
    data = request("POST", "/publish?topic=t", b"x")
    gc.collect()
    gc.disable()
    try:
        parsed = [_parse_head(data[: -len(b"x")]) for _ in range(100)]
        del parsed
        assert gc.collect() == 0
    finally:
        gc.enable()


async def test_a_route_that_fails_hangs_up_and_the_server_goes_on(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.consumers.publish import PublishRequest

    original = PublishRequest.finish

    def broken(self: PublishRequest) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(PublishRequest, "finish", broken)
    with captured_logs() as logs:
        reader, writer = await asyncio.open_connection(*server.admin)
        writer.write(request("POST", "/publish?topic=t", b"x"))
        assert await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT) == b""
        writer.close()
    assert "Uncaught exception in POST /publish" in logs.getvalue()
    assert not server.server._servers[1].fronts
    monkeypatch.setattr(PublishRequest, "finish", original)
    answers = await exchange(server, request("POST", "/publish?topic=t", b"x"))
    assert answers[0][0] == 202


@pytest.mark.parametrize("close_after", [False, True])
@pytest.mark.parametrize("status", [202, 400, 503, 599])
def test_a_json_answer_from_the_template_is_the_generic_answer(
    status: int, close_after: bool
) -> None:
    answers: list[bytes] = []
    server = SimpleNamespace(queue_answer=lambda _front, data: answers.append(data))
    body = b'{"topic": "t\\u00e9", "bytes": 3}'
    date = "Sat, 28 Nov 2026 15:00:00 GMT"
    for answer in ("generic", "template"):
        front = object.__new__(FrontConnection)
        front.server, front._close_after, front._out = server, close_after, []
        if answer == "generic":
            headers = [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Date", date),
            ]
            front.respond(status, headers, body)
        else:
            front.respond_json(status, body, date)
    generic, template = answers
    assert template == generic
    assert template.endswith(b"\r\n\r\n" + body)
    assert (b"\r\nConnection: close\r\n" in template) is close_after
