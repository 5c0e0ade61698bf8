"""The listeners' front door: the hot requests are read straight from the socket.

Tornado's HTTP layer (``HTTP1Connection`` over an ``IOStream``: a coroutine per
request, a header timeout, futures for every read and write) costs several
times what a publish or a stream opening does itself. :class:`FrontServer` is a
Tornado ``HTTPServer`` that looks at each new connection before Tornado does:

1. It watches the socket and, when bytes arrive, reads them and parses them
   with ``httptools``.
2. A complete, plainly valid HTTP/1.1 request for one of the
   :class:`~service.web.router.Router`'s routes (``POST /publish``,
   ``GET /events``) is given to the route's delegate, exactly as Tornado would
   give it; the delegate answers through this connection (which implements
   Tornado's ``HTTPConnection``). A publish connection stays here for its next
   request; a pipelined request that came in the same read is served once the
   one before it is answered.
3. Anything else — another path, a body that has not fully arrived, chunked
   bodies, ``Expect``/``Upgrade``, HTTP/1.0, a malformed request — is handed,
   with the connection, to Tornado's ``HTTPServer`` for good: its ``IOStream``
   reads first the bytes the front read (:class:`_ReadAgainStream`), then the
   socket, so Tornado reads and answers the request as if it had been there
   from the start.

So the front adds no behaviour of its own: each request is answered by the same
code either way, and Tornado remains the parser of record for everything
unusual.

Answers are written at the end of the loop iteration that read their requests,
together. A client waiting for an answer sleeps, and the write that wakes it
costs the writer a cross-CPU wakeup (an inter-processor interrupt: a VM exit on
a virtual machine); a publisher with several connections gets the answers of
one iteration's requests at one wakeup instead of one each. A stream's frames
are not held back: a publish writes them as it fans out, before its answer.

A publisher sends the same head for every message of a topic and body length;
only the body changes. The front keeps the parsed heads of ``POST`` requests
(the most recently used :data:`HEAD_CACHE_SIZE`), so a head seen before costs
a lookup instead of a parse: the same bytes always parse alike.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, NamedTuple

import httptools
from tornado import httputil
from tornado.concurrent import Future
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.log import app_log

from service.web.router import Router

#: The most a request may take (head and body) to be answered at the front; also
#: the most one read takes from the socket.
READ_BYTES = 64 * 1024
#: How often connections waiting for a request are checked against the idle timeout.
_SWEEP_INTERVAL = 30.0
#: Reason phrases of the status codes.
_REASONS = {status.value: status.phrase for status in HTTPStatus}
#: The head of a JSON answer without other headers (:meth:`FrontConnection.respond_json`).
_JSON_HEAD = (
    b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\nDate: %b\r\n%b\r\n"
)
_REASON_BYTES = {status: reason.encode("latin-1") for status, reason in _REASONS.items()}
#: Request headers that make a request Tornado's to handle.
_UNUSUAL = frozenset((b"transfer-encoding", b"expect", b"upgrade"))
#: Parsed ``POST`` heads kept (one per topic and body length a publisher uses,
#: 1-2 KiB each).
HEAD_CACHE_SIZE = 4096


class FrontServer(HTTPServer):
    """An ``HTTPServer`` for a :class:`~service.web.router.Router` that serves its routes first."""

    def initialize(self, request_callback: Any, *args: Any, **kwargs: Any) -> None:
        super().initialize(request_callback, *args, **kwargs)
        self.router: Router | None = (
            request_callback if isinstance(request_callback, Router) else None
        )
        #: Connections the front holds.
        self.fronts: set[FrontConnection] = set()
        self.idle_timeout = float(self.conn_params.header_timeout or 3600)
        self.closing = False
        self._sweeping: asyncio.TimerHandle | None = None
        #: Answers to write at the end of this loop iteration.
        self._answers: list[tuple[FrontConnection, bytes]] = []

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        if self.router is None or not self.router.routes or self.closing:
            super().handle_stream(stream, address)
            return
        FrontConnection(self, self.router, stream, address).wait()
        if self._sweeping is None:
            self._schedule_sweep()

    def pass_on(self, stream: IOStream, address: Any) -> None:
        """Give a connection to Tornado's HTTP layer, from its next request on."""
        super().handle_stream(stream, address)

    def queue_answer(self, front: FrontConnection, data: bytes) -> None:
        """Write ``data`` to ``front`` with the other answers of this loop iteration."""
        if not self._answers:
            front.loop.call_soon(self.write_answers)
        self._answers.append((front, data))

    def write_answers(self) -> None:
        answers, self._answers = self._answers, []
        for front, data in answers:
            front.write_answer(data)

    async def close_all_connections(self) -> None:
        self.closing = True
        self.write_answers()
        for front in list(self.fronts):
            front.close()
        if self._sweeping is not None:
            self._sweeping.cancel()
        await super().close_all_connections()

    def _schedule_sweep(self) -> None:
        interval = min(_SWEEP_INTERVAL, self.idle_timeout / 2)
        self._sweeping = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Close connections that have waited longer than the idle timeout for a request."""
        oldest = time.monotonic() - self.idle_timeout
        for front in list(self.fronts):
            if not front.busy and front.idle_since < oldest:
                front.close()
        self._schedule_sweep()


class _Context:
    """What handlers read from ``connection.context`` (as Tornado's own context)."""

    __slots__ = ("address", "protocol", "remote_ip")

    def __init__(self, address: Any) -> None:
        self.address = address
        is_ip = isinstance(address, tuple) and bool(address)
        self.remote_ip = str(address[0]) if is_ip else "0.0.0.0"
        self.protocol = "http"


class _Head(NamedTuple):
    """What a plainly valid HTTP/1.1 request's head says."""

    method: str
    target: str
    #: Shared by every request with the same head: read, never changed.
    headers: httputil.HTTPHeaders
    keep_alive: bool
    body_length: int
    #: Method and path: the router's key.
    route: tuple[str, str]
    start_line: httputil.RequestStartLine


class _Request(NamedTuple):
    """The first request of the bytes read."""

    head: _Head
    body: bytes
    #: Bytes it takes on the socket, head and body.
    size: int


class _HeadParsing:
    """One request head fed to ``httptools``, filled in by its callbacks."""

    __slots__ = (
        "done",
        "headers",
        "keep_alive",
        "method",
        "parser",
        "target",
        "unusual",
        "version",
    )

    def __init__(self) -> None:
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.version = ""
        self.target = ""
        self.method = ""
        self.headers = httputil.HTTPHeaders()
        self.done = False
        self.unusual = False
        self.keep_alive = True

    def on_url(self, url: bytes) -> None:
        self.target += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in _UNUSUAL:
            self.unusual = True
        # As Tornado's own parser does: surrounding whitespace is not part of the value.
        self.headers.add(name.decode("latin-1"), value.decode("latin-1").strip(" \t"))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.method = self.parser.get_method().decode("ascii")
        self.version = self.parser.get_http_version()
        self.keep_alive = self.parser.should_keep_alive()
        self.done = True


def _parse_head(raw: bytes) -> _Head | None:
    """``raw`` (up to the blank line) if it is a plainly valid HTTP/1.1 request head,
    parsed with ``httptools``; else None, for Tornado to answer."""
    parsing = _HeadParsing()
    parser = parsing.parser
    assert parser is not None
    try:
        parser.feed_data(raw)
        length = int(parsing.headers.get("Content-Length", "0"))
    except (httptools.HttpParserError, httputil.HTTPInputError, ValueError):
        return None
    finally:
        # The parser and its callbacks point at each other: a cycle per request would
        # leave the garbage collector tens of thousands of objects to trace at a time.
        parsing.parser = None
    if not parsing.done or parsing.unusual or parsing.version != "1.1":
        return None
    method, target = parsing.method, parsing.target
    return _Head(
        method,
        target,
        parsing.headers,
        parsing.keep_alive,
        length,
        route=(method, target.partition("?")[0]),
        start_line=httputil.RequestStartLine(method, target, "HTTP/1.1"),
    )


#: ``_parse_head`` for ``POST`` heads, remembered. Stream openings are not: each
#: carries its own consumer id or ``Last-Event-ID``, and would only push the
#: publishers' heads out.
_parse_post_head = functools.lru_cache(maxsize=HEAD_CACHE_SIZE)(_parse_head)


def _parse(data: bytes) -> _Request | None:
    """The first request in ``data`` if it is complete, HTTP/1.1 and plain; else None.

    Only the body its head announces is taken, so a pipelined request behind it
    stays for later.
    """
    head_end = data.find(b"\r\n\r\n") + 4
    if head_end < 4:
        return None
    raw = data[:head_end]
    head = _parse_post_head(raw) if raw.startswith(b"POST ") else _parse_head(raw)
    if head is None:
        return None
    size = head_end + head.body_length
    if size > len(data):
        return None  # the body has not fully arrived
    return _Request(head, data[head_end:size], size)


class _ReadAgainStream(IOStream):
    """Tornado's ``IOStream`` for a socket the front has read from: its first reads
    return the bytes the front read, its later ones read the socket."""

    def __init__(self, already_read: bytes, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._already_read = memoryview(already_read)

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        if not self._already_read:
            return super().read_from_fd(buf)
        count = min(len(buf), len(self._already_read))
        buf[:count] = self._already_read[:count]
        self._already_read = self._already_read[count:]
        return count


class FrontConnection(httputil.HTTPConnection):
    """One connection while the front serves it; Tornado's ``HTTPConnection`` for the answers."""

    __slots__ = (
        "_close_after",
        "_close_callback",
        "_detached",
        "_out",
        "_unread",
        "address",
        "busy",
        "context",
        "fd",
        "idle_since",
        "loop",
        "router",
        "server",
        "sock",
        "stream",
        "watching",
    )

    def __init__(self, server: FrontServer, router: Router, stream: IOStream, address: Any) -> None:
        self.server = server
        self.router = router
        self.stream = stream
        self.address = address
        self.sock: socket.socket = stream.socket
        # Answers and stream frames are small and must leave at once (no Nagle
        # delay behind an unacknowledged segment), as Tornado's HTTP layer does.
        stream.set_nodelay(True)
        self.fd = self.sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.context = _Context(address)
        #: Whether the socket's readability is watched (it stays so between requests).
        self.watching = False
        #: Whether a request is being answered.
        self.busy = False
        self.idle_since = 0.0
        self._detached = False
        self._close_after = False
        self._close_callback: Callable[[], None] | None = None
        self._out: list[bytes] = []
        #: Bytes read past the request being answered: the next, pipelined request.
        self._unread = b""

    # --- reading --------------------------------------------------------------------

    def wait(self) -> None:
        """Wait for the next request (or serve the one already read)."""
        self.busy = False
        self.idle_since = time.monotonic()
        if not self.watching:
            self.server.fronts.add(self)
            self.watching = True
            self.loop.add_reader(self.fd, self._readable)
        if self._unread:
            # A pipelined request came in the same read as the last one: the socket
            # may have nothing more to read, so it is served without waiting for it.
            self.loop.call_soon(self._serve_unread)

    def _stop_reading(self) -> None:
        if self.watching:
            self.watching = False
            self.loop.remove_reader(self.fd)

    def _leave(self) -> None:
        """The front lets go of the connection (to Tornado, a stream, or closed)."""
        self._stop_reading()
        self.server.fronts.discard(self)

    def _readable(self) -> None:
        if self.busy:
            # The next request arrived before this one was answered (a publish to a
            # remote broker): stop watching until the answer is out.
            self._stop_reading()
            return
        try:
            data = self.sock.recv(READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client hung up between requests
            self.close()
            return
        if self._unread:
            data, self._unread = self._unread + data, b""
        self._serve(data)

    def _serve_unread(self) -> None:
        """Serve the pipelined request read with the last one (see :meth:`wait`)."""
        if self._unread and not self.busy and self.watching:
            data, self._unread = self._unread, b""
            self._serve(data)

    def _serve(self, data: bytes) -> None:
        """Answer the first request of ``data`` here, or hand everything to Tornado."""
        request = _parse(data)
        route = None if request is None else self.router.routes.get(request.head.route)
        if request is None or route is None:
            self._pass_on(data)
            return
        head = request.head
        self._unread = data[request.size :]
        self.busy = True
        self._close_after = not head.keep_alive
        try:
            delegate = route(self, self._to_application)
            delegate.headers_received(head.start_line, head.headers)
            if request.body:
                delegate.data_received(request.body)
            delegate.finish()
        except Exception:
            # As Tornado's HTTP layer does with a delegate that fails: log, hang up.
            app_log.error("Uncaught exception in %s %s", head.method, head.route[1], exc_info=True)
            self.close()

    def _to_application(self) -> httputil.HTTPMessageDelegate:
        return self.router.app.start_request(self, self)

    def _pass_on(self, already_read: bytes) -> None:
        self._leave()
        self.server.pass_on(self._handover_stream(already_read), self.address)

    def _handover_stream(self, already_read: bytes) -> IOStream:
        """The ``IOStream`` Tornado takes the connection with: one that reads
        ``already_read`` first, when the front has read bytes it did not serve."""
        if already_read:
            # The front never read or wrote through the original stream, so nothing of
            # it is registered with the loop: a new stream may take the socket over.
            self.stream = _ReadAgainStream(
                already_read,
                self.sock,
                max_buffer_size=self.server.max_buffer_size,
                read_chunk_size=self.server.read_chunk_size,
            )
        return self.stream

    # --- answering (Tornado's HTTPConnection) ---------------------------------------

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> Future[None]:
        assert isinstance(start_line, httputil.ResponseStartLine)
        framed = "Content-Length" in headers or start_line.code in (204, 304)
        # Without a length the body ends when the connection does (no chunked framing here).
        if not framed:
            self._close_after = True
        self._out = [self._head(start_line.code, start_line.reason, headers.get_all())]
        return self.write(chunk or b"")

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """A whole answer in one call: ``write_headers``, ``write`` and ``finish`` without
        Tornado's header objects (``headers`` must include ``Content-Length``)."""
        head = self._head(status, _REASONS.get(status, "Unknown"), headers)
        self.server.queue_answer(self, head + body)

    def respond_json(self, status: int, body: bytes, date: str) -> None:
        """``respond`` with ``Content-Type: application/json``, ``Content-Length`` and
        ``Date`` and no other headers (the control API's usual answer), from a template."""
        close = b"Connection: close\r\n" if self._close_after else b""
        reason = _REASON_BYTES.get(status, b"Unknown")
        head = _JSON_HEAD % (status, reason, len(body), date.encode("latin-1"), close)
        self.server.queue_answer(self, head + body)

    def _head(self, status: int, reason: str, headers: Iterable[tuple[str, str]]) -> bytes:
        """The encoded response head (noting whether the connection closes after it)."""
        lines = [f"HTTP/1.1 {status} {reason}"]
        connection = None
        for name, value in headers:
            lines.append(f"{name}: {value}")
            if name == "Connection":
                connection = value.lower()
        if connection == "close":
            self._close_after = True
        elif connection is None and self._close_after:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def write(self, chunk: bytes) -> Future[None]:
        if chunk:
            self._out.append(chunk)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def finish(self) -> None:
        data = b"".join(self._out)
        self._out = []
        self.server.queue_answer(self, data)

    def write_answer(self, data: bytes) -> None:
        """Write a whole answer, then wait for the next request (or hang up)."""
        if self.stream.closed():  # closed while its answer waited
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            # The client is not reading its answers: the IOStream buffers the rest, and
            # Tornado's HTTP layer (which waits for its writes) takes the connection,
            # with any pipelined request the front has read.
            self._leave()
            stream = self._handover_stream(self._unread)
            self._unread = b""
            writing = stream.write(memoryview(data)[sent:])
            if self._close_after or self.server.closing:
                writing.add_done_callback(lambda _f: stream.close())
            else:
                self.server.pass_on(stream, self.address)
            return
        if self._close_after or self.server.closing:
            self.close()
        else:
            self.wait()

    def detach(self) -> IOStream:
        """The connection leaves the front (an SSE stream takes the socket).

        The socket stays registered with the loop for readability, if it is: the
        stream that takes it re-points that registration to its own callback
        (``add_reader`` on a registered descriptor is no system call), or removes
        it before closing the socket. A stream opening costs one registration and
        one removal instead of two each.
        """
        self._detached = True
        self.watching = False  # the registration, if any, is the new owner's now
        self._leave()
        return self.stream

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_callback = callback

    def set_max_body_size(self, max_body_size: int) -> None:
        """The whole body has been read already; the route applies its own limit."""

    def close(self) -> None:
        self._leave()
        if not self._detached:
            self.stream.close()
        callback, self._close_callback = self._close_callback, None
        if callback is not None:
            callback()
