"""Do-nothing servers: what each layer under unifrost costs per publish and per connect.

Each floor answers ``POST /publish`` with a fixed 202 and ``GET /events`` with
a fixed SSE head, keeps the stream open and notices when it closes, and does
nothing else: no consumer, no fan-out, no log line. Measured like unifrost by
``python -m bench.costs --floors``, they show how much of a request's cost is
the layer it is served on rather than the service's own work:

* ``asyncio`` — an ``asyncio.Protocol`` on the event loop, no HTTP library;
* ``peek`` — Tornado's ``TCPServer`` accepting, then the socket read directly
  from an event-loop reader (peek, then consume), no HTTP library: the layer
  unifrost's front door (``service/web/front.py``) answers both requests on;
* ``iostream`` — Tornado's ``TCPServer`` and ``IOStream``, no HTTP library;
* ``http`` — Tornado's ``HTTPServer`` (``HTTP1Connection``) with a bare
  ``HTTPMessageDelegate``: the layer of every request the front hands on;
* ``web`` — a Tornado ``Application`` with a ``RequestHandler`` per route.

Run one by hand with ``python -m bench.floors KIND PORT``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

from tornado import httpserver, httputil, iostream, tcpserver, web

KINDS = ("asyncio", "peek", "iostream", "http", "web")

_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nConnection: close\r\n\r\nretry: 3000\n\n"
)
_ACCEPTED_BODY = b'{"topic":"t","bytes":64}'
_ACCEPTED = (
    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_ACCEPTED_BODY), _ACCEPTED_BODY)
)

#: Open streams, so nothing is collected while the client holds them.
_streams: set[Any] = set()


def _body_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            size = end + 4 + _body_length(self.buffer[:end])
            if len(self.buffer) < size:
                return
            request, self.buffer = self.buffer[:size], self.buffer[size:]
            if request.startswith(b"GET "):
                self.transport.write(_STREAM_HEAD)
                _streams.add(self)
            else:
                self.transport.write(_ACCEPTED)

    def connection_lost(self, exc: Exception | None) -> None:
        _streams.discard(self)


class _PeekServer(tcpserver.TCPServer):
    """Reads requests from the socket itself; a stream's socket then goes to its IOStream."""

    def handle_stream(self, stream: iostream.IOStream, address: Any) -> None:
        sock = stream.socket
        loop = asyncio.get_running_loop()
        fd = sock.fileno()

        def readable() -> None:
            try:
                data = sock.recv(65536, socket.MSG_PEEK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                stream.close()
                return
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return
            size = end + 4 + _body_length(data[:end])
            if len(data) < size:
                return
            sock.recv(size)
            if data.startswith(b"GET "):
                loop.remove_reader(fd)
                _open(stream)
            else:
                sock.send(_ACCEPTED)

        loop.add_reader(fd, readable)


class _StreamServer(tcpserver.TCPServer):
    async def handle_stream(self, stream: iostream.IOStream, address: Any) -> None:
        try:
            while True:
                head = await stream.read_until(b"\r\n\r\n")
                length = _body_length(head)
                if length:
                    await stream.read_bytes(length)
                if head.startswith(b"GET "):
                    _streams.add(stream)
                    stream.set_close_callback(lambda: _streams.discard(stream))
                    await stream.write(_STREAM_HEAD)
                    return
                await stream.write(_ACCEPTED)
        except iostream.StreamClosedError:
            pass


class _Message(httputil.HTTPMessageDelegate):
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.method = ""

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> None:
        self.method = start_line.method

    def finish(self) -> None:
        if self.method == "GET":
            _open(self.conn.detach())
            return
        headers = httputil.HTTPHeaders(
            {"Content-Type": "application/json", "Content-Length": str(len(_ACCEPTED_BODY))}
        )
        start = httputil.ResponseStartLine("HTTP/1.1", 202, "Accepted")
        self.conn.write_headers(start, headers, _ACCEPTED_BODY)
        self.conn.finish()


class _Delegate(httputil.HTTPServerConnectionDelegate):
    def start_request(self, server_conn: object, request_conn: Any) -> _Message:
        return _Message(request_conn)


class _Events(web.RequestHandler):
    def get(self) -> None:
        _open(self.detach())


class _Publish(web.RequestHandler):
    def post(self) -> None:
        self.set_status(202)
        self.set_header("Content-Type", "application/json")
        self.finish(_ACCEPTED_BODY)


def _open(stream: iostream.IOStream) -> None:
    _streams.add(stream)
    stream.set_close_callback(lambda: _streams.discard(stream))
    stream.write(_STREAM_HEAD)


async def serve(kind: str, port: int) -> None:
    if kind == "asyncio":
        loop = asyncio.get_running_loop()
        await loop.create_server(_Protocol, "127.0.0.1", port, backlog=4096)
    elif kind == "peek":
        _PeekServer().listen(port, "127.0.0.1", backlog=4096)
    elif kind == "iostream":
        _StreamServer().listen(port, "127.0.0.1", backlog=4096)
    elif kind == "http":
        httpserver.HTTPServer(_Delegate()).listen(port, "127.0.0.1", backlog=4096)
    elif kind == "web":
        app = web.Application([(r"/events", _Events), (r"/publish", _Publish)])
        httpserver.HTTPServer(app).listen(port, "127.0.0.1", backlog=4096)
    else:
        raise SystemExit(f"unknown floor {kind!r}; one of {', '.join(KINDS)}")
    print("listening", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: python -m bench.floors {{{','.join(KINDS)}}} PORT")
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
