"""Test harness: a real server on ephemeral loopback ports, and real HTTP clients.

``running_server(**settings)`` starts :class:`service.server.Server` in the
test's event loop; ``api()`` speaks to the control API over HTTP; ``SseClient``
reads ``GET /events`` over a raw socket so tests can stall or drop it at will.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from service.brokers.base import Broker
from service.config import Address, Settings
from service.log import configure_logging, flush_logs, log_output, set_log_output
from service.metrics import Metrics
from service.server import Server

DEFAULT_TIMEOUT = 5.0


def make_settings(**changes: Any) -> Settings:
    """Test settings: loopback ephemeral ports, then ``changes`` (nested via dataclasses)."""
    base = Settings(
        listen=Address("127.0.0.1", 0),
        admin_listen=Address("127.0.0.1", 0),
        drain_timeout=2.0,
    )
    return dataclasses.replace(base, **changes)


@dataclasses.dataclass
class Running:
    server: Server

    @property
    def public(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.public_port)

    @property
    def admin(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.admin_port)

    @property
    def manager(self) -> Any:
        assert self.server.ctx is not None
        return self.server.ctx.manager

    @property
    def broker(self) -> Any:
        return self.server.broker

    @property
    def metrics(self) -> Metrics:
        return self.server.metrics

    async def api(self, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        return await http(self.admin, method, path, body, **kw)

    async def public_api(self, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        return await http(self.public, method, path, body, **kw)

    async def create_consumer(self, topics: list[str] | None = None, **body: Any) -> str:
        response = await self.api("POST", "/consumers", {"topics": topics or [], **body})
        assert response.status == 201, response.text
        return str(response.json()["consumer_id"])

    async def publish(self, topic: str, payload: str | bytes) -> None:
        response = await self.api("POST", f"/publish?topic={topic}", payload)
        assert response.status == 202, response.text

    async def stream(self, consumer_id: str | None = None, **kw: Any) -> SseClient:
        client = SseClient(self.public)
        await client.connect(consumer_id, **kw)
        return client


@contextlib.asynccontextmanager
async def running_server(driver: Broker | None = None, **changes: Any) -> AsyncIterator[Running]:
    """A started server with ``changes`` applied to the test settings; ``driver`` is a
    broker driver to use instead of the one ``settings.broker`` names."""
    server = Server(make_settings(**changes), Metrics(), broker=driver)
    await server.start()
    try:
        yield Running(server)
    finally:
        if server.ctx is not None and not server.ctx.state.draining:
            await server.stop()


# --- plain HTTP over a socket ---------------------------------------------------------


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


async def http(
    address: tuple[str, int],
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw_body: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Response:
    """One HTTP/1.1 request on a fresh connection (``Connection: close``).

    ``body``: dict/list -> JSON, str/bytes -> sent as is.
    """
    if raw_body is None:
        if body is None:
            raw_body = b""
        elif isinstance(body, bytes):
            raw_body = body
        elif isinstance(body, str):
            raw_body = body.encode()
        else:
            raw_body = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(*address)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {address[0]}:{address[1]}"]
        all_headers = {"Connection": "close", **(headers or {})}
        if raw_body or method in ("POST", "PUT", "PATCH"):
            all_headers.setdefault("Content-Length", str(len(raw_body)))
        head += [f"{k}: {v}" for k, v in all_headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + raw_body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return parse_response(data)


def parse_response(data: bytes) -> Response:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Response(status, headers, body)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


# --- SSE over a raw socket --------------------------------------------------------------


@dataclasses.dataclass
class Frame:
    """One SSE event block. ``comment`` frames are heartbeats."""

    event: str | None = None
    data: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: bool = False

    @property
    def decoded(self) -> Any:
        """``data`` parsed as the unifrost ``[topic, payload]`` array."""
        assert self.data is not None
        return json.loads(self.data)

    @property
    def topic(self) -> str:
        return str(self.decoded[0])

    @property
    def payload(self) -> str:
        return str(self.decoded[1])

    @property
    def inner(self) -> Any:
        """The JSON object inside info/error frames."""
        return json.loads(self.payload)


class SseClient:
    """A ``GET /events`` client on a raw socket, parsing frames as they arrive."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.status = 0
        self.headers: dict[str, str] = {}
        self.error_body = b""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(
        self,
        consumer_id: str | None,
        query: str = "",
        headers: dict[str, str] | None = None,
        recv_buffer: int | None = None,
    ) -> SseClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if recv_buffer is not None:  # a tiny window makes a stalled reader back up fast
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, self.address)
        self._reader, self._writer = await asyncio.open_connection(sock=sock)
        params = [f"id={consumer_id}"] if consumer_id is not None else []
        if query:
            params.append(query)
        path = "/events" + ("?" + "&".join(params) if params else "")
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {self.address[0]}:{self.address[1]}",
            "Accept: text/event-stream",
            "User-Agent: unifrost-tests",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), DEFAULT_TIMEOUT)
        response = parse_response(head)
        self.status, self.headers = response.status, response.headers
        if self.status != 200:
            length = int(self.headers.get("content-length", "0"))
            self.error_body = await self._reader.readexactly(length) if length else b""
        return self

    def error_json(self) -> Any:
        return json.loads(self.error_body)

    async def frame(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The next event block (a ``retry:``-only block counts as one)."""
        assert self._reader is not None
        raw = await asyncio.wait_for(self._reader.readuntil(b"\n\n"), timeout)
        frame = Frame()
        for line in raw.decode().split("\n"):
            if not line:
                continue
            if line.startswith(":"):
                frame.comment = True
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "retry":
                frame.retry = int(value)
            elif name in ("event", "data", "id"):
                setattr(frame, name, value)
        return frame

    async def data_frame(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The next frame with data, skipping heartbeats and bare retry blocks."""
        while True:
            frame = await self.frame(timeout)
            if frame.data is not None:
                return frame

    async def opening(self) -> tuple[int, Frame]:
        """Read the ``retry:`` block and the info frame; returns (retry_ms, info)."""
        retry = await self.frame()
        assert retry.retry is not None, retry
        info = await self.data_frame()
        assert info.topic == "/unifrost/info", info
        return retry.retry, info

    async def messages(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[Frame]:
        return [await self.data_frame(timeout) for _ in range(count)]

    async def at_eof(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True once the server has closed the stream (reads and discards the rest)."""
        assert self._reader is not None
        try:
            await asyncio.wait_for(self._reader.read(), timeout)
        except TimeoutError:
            return False
        return self._reader.at_eof()

    def close(self) -> None:
        """Drop the connection abruptly, as a closing browser tab does."""
        if self._writer is not None:
            self._writer.transport.abort()


# --- waiting, scraping, asserting ---------------------------------------------------------


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 3.0, interval: float = 0.01
) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def metric(running: Running, name: str, **labels: str) -> float:
    """One sample from a real ``GET /metrics`` scrape."""
    response = await running.api("GET", "/metrics")
    assert response.status == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels}")


def assert_json_error(response: Response, status: int, code: str | None = None) -> dict[str, Any]:
    """``response`` is ``status`` with a ``{"error": {"code", "message"}}`` body."""
    assert response.status == status, (response.status, response.text)
    assert "Traceback" not in response.text
    assert response.headers.get("content-type", "").startswith("application/json"), response
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    if code is not None:
        assert error["code"] == code, body
    return dict(error)


def log_records(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` (anything else skipped)."""
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def logged_events(text: str) -> set[str]:
    return {str(record.get("event")) for record in log_records(text)}


class LogBuffer(io.StringIO):
    """Captured lines; reading them first writes the lines held for the loop's iteration end."""

    def __init__(self) -> None:
        super().__init__()
        #: Writes the service made to its output.
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def getvalue(self) -> str:
        flush_logs()
        return super().getvalue()

    def written(self) -> str:
        """What the service has written so far (lines it still holds are not)."""
        return super().getvalue()


@contextlib.contextmanager
def captured_logs(fmt: str = "json", level: str = "info") -> Iterator[LogBuffer]:
    """Route the service's logging into a buffer for the duration of the block."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_output = log_output()
    buffer = LogBuffer()
    configure_logging(fmt, level, stream=buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        set_log_output(saved_output)
