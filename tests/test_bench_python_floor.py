"""The Python floor (``bench/python_floor.py``): every frame to every stream of its topic, in order.

It is a reference the suite measures the others against, so it must deliver
what they deliver: these tests talk to it over real sockets, as the load
generator does. The last two check how the table reports it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bench.report import floor_reference, render
from bench.servers import PythonFloorServer

HEAD_END = b"retry: 3000\n\n"


@pytest.fixture
def port() -> Iterator[int]:
    with PythonFloorServer(processes=1, cpu=None, fd_limit=1024) as server:
        yield server.publish_port


def open_stream(port: int, topic: str, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /events?topic={topic} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = b""
    while not head.endswith(HEAD_END):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/event-stream" in head
    return sock


def publish_request(topic: str, body: bytes) -> bytes:
    return (
        f"POST /publish?topic={topic} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def test_a_publish_reaches_every_stream_of_its_topic_and_no_other(port: int) -> None:
    first, second, other = (open_stream(port, t) for t in ("t", "t", "u"))
    publisher = socket.create_connection(("127.0.0.1", port), timeout=10)
    # Three requests in one write: each is answered, in order.
    messages = [("t", b"1:a"), ("none", b"x"), ("t", b"2:b")]
    publisher.sendall(b"".join(publish_request(topic, body) for topic, body in messages))
    assert read_exactly(publisher, 3 * len(ACCEPTED)) == 3 * ACCEPTED
    publisher.sendall(publish_request("u", b"3:c"))
    assert read_exactly(publisher, len(ACCEPTED)) == ACCEPTED

    expected = b"data: 1:a\n\ndata: 2:b\n\n"
    assert read_exactly(first, len(expected)) == expected
    assert read_exactly(second, len(expected)) == expected
    assert read_exactly(other, len(b"data: 3:c\n\n")) == b"data: 3:c\n\n"
    for sock in (first, second, other, publisher):
        sock.close()


def test_a_stream_that_hangs_up_leaves_its_topic(port: int) -> None:
    leaving, staying = open_stream(port, "t"), open_stream(port, "t")
    leaving.close()
    publisher = socket.create_connection(("127.0.0.1", port), timeout=10)
    for n in range(3):  # the hang-up is noticed between two of these at the latest
        publisher.sendall(publish_request("t", b"%d" % n))
        assert read_exactly(publisher, len(ACCEPTED)) == ACCEPTED
    expected = b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert read_exactly(staying, len(expected)) == expected
    staying.close()
    publisher.close()


def test_a_stream_that_does_not_read_gets_everything_later_in_order(port: int) -> None:
    slow = open_stream(port, "t", rcvbuf=4096)
    publisher = socket.create_connection(("127.0.0.1", port), timeout=10)
    padding = b"." * 4000
    count = 2_000  # 8 MB: more than the socket buffers hold, so the floor must keep the rest
    for n in range(count):
        publisher.sendall(publish_request("t", b"%d:%b" % (n, padding)))
        assert read_exactly(publisher, len(ACCEPTED)) == ACCEPTED
    expected = b"".join(b"data: %d:%b\n\n" % (n, padding) for n in range(count))
    assert read_exactly(slow, len(expected)) == expected
    slow.close()
    publisher.close()


def _throughput(per_cpu_s: int, delivered: bool = True) -> dict[str, object]:
    return {"status": "ok", "deliveries_per_cpu_s": per_cpu_s, "all_delivered": delivered}


def test_the_table_sets_the_floor_beside_the_targets() -> None:
    results = {
        "b": {
            "unifrost": _throughput(88_000),
            "sse-starlette": _throughput(25_000),
            "python-floor": _throughput(110_000),
        }
    }
    assert floor_reference(results) == [
        {"scenario": "b", "floor_per_starlette": 4.4, "unifrost_per_floor": 0.8}
    ]
    table = render(results, {"b": "spread"}, ["unifrost", "sse-starlette", "python-floor"])
    assert "(b) deliveries / server CPU-s: 4.40x sse-starlette; unifrost at 0.80x of it" in table
    assert "÷ python-floor" in table


def test_no_floor_or_a_floor_that_lost_messages_is_no_reference() -> None:
    without = {"b": {"unifrost": _throughput(88_000), "sse-starlette": _throughput(25_000)}}
    assert floor_reference(without) == []
    assert "Reference" not in render(without, {"b": "spread"}, ["unifrost", "sse-starlette"])
    lossy = {"b": {**without["b"], "python-floor": _throughput(110_000, delivered=False)}}
    assert floor_reference(lossy) == []
