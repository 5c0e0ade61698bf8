"""``GET /events``: open an SSE stream for a consumer.

:class:`StreamHandler` validates the request with ordinary JSON errors, then
:func:`start_stream` takes the socket over from Tornado's HTTP layer (as
WebSocket handlers do), writes the response head itself and hands the socket to
an :class:`SseConnection`. The body has no chunked framing: it simply ends when
the connection closes.

The standalone server opens plainly valid requests before routing
(``service.consumers.events``) with the same checks and :func:`start_stream`;
everything else, and every embedding application, goes through the handler.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import socket
from collections.abc import Callable
from typing import Any

from tornado.iostream import IOStream

from service import sse
from service.config import Settings
from service.consumers.connection import SseConnection
from service.consumers.consumer import Consumer, consumer_id_problem, topic_problem
from service.consumers.manager import ConsumerExists, TooManyConsumers
from service.context import AppContext
from service.log import get_logger
from service.web.base import ApiError, BaseHandler, http_date, is_ascii_number

log = get_logger("unifrost.stream")


#: Event ids count messages; anything above a signed 64-bit integer is not one of ours.
MAX_EVENT_ID = 2**63 - 1


def event_id(value: str) -> int | None:
    """``value`` as an event id (0 to :data:`MAX_EVENT_ID` in ASCII digits), else None."""
    if not is_ascii_number(value):
        return None
    number = int(value)
    return number if number <= MAX_EVENT_ID else None


# Asked for every topic of every self-subscribing stream, and topics repeat.
@functools.lru_cache(maxsize=4096)
def topic_allowed(topic: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(topic, pattern) for pattern in patterns)


def cors_headers(origin: str | None, settings: Settings) -> dict[str, str]:
    """The CORS headers a stream or an error answer carries for ``origin``."""
    if origin and origin in settings.cors_origins:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }
    return {}


def requested_topics(values: list[bytes] | None) -> list[str]:
    """The ``topics=a,b`` query argument, checked whether or not a consumer is created from it.

    Read raw: Tornado's argument helpers strip whitespace and turn control
    characters into spaces, which would subscribe to a different topic.
    """
    if not values:
        return []
    try:
        topics = [t for t in values[-1].decode("utf-8").split(",") if t]
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad-topic", "topics are not valid UTF-8") from exc
    for topic in topics:
        problem = topic_problem(topic)
        if problem:
            raise ApiError(400, "bad-topic", f"{topic!r}: {problem}")
    return topics


def resume_after(query: str | None, header: str) -> int | None:
    """The event id a stream resumes after, from ``?last_event_id=`` and ``Last-Event-ID``.

    Raises:
        ApiError: 400 for a malformed ``last_event_id``, whatever the header says.
    """
    query_id = None if query is None else event_id(query)
    if query is not None and query_id is None:
        raise ApiError(400, "bad-request", f"last_event_id must be an integer 0-{MAX_EVENT_ID}")
    # The browser echoes the id we sent; anything else is not ours, so ignore it.
    # A browser reconnecting by itself keeps the URL (and any last_event_id
    # it was opened with) and sends the newer Last-Event-ID: the header wins.
    header_id = event_id(header.strip())
    return query_id if header_id is None else header_id


def check_may_create(settings: Settings, topics: list[str]) -> None:
    """Raise unless a stream without a consumer id may create one for ``topics``."""
    if not settings.auto_create_consumers:
        raise ApiError(400, "bad-request", "missing consumer id (?id=...)")
    allow = settings.client_subscriptions.allow
    for topic in topics:
        if not topic_allowed(topic, allow):
            raise ApiError(403, "forbidden", f"topic {topic!r} is not allowed for clients")


class CorsMixin(BaseHandler):
    def set_cors_headers(self) -> None:
        origin = self.request.headers.get("Origin")
        for name, value in cors_headers(origin, self.ctx.settings).items():
            self.set_header(name, value)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # send_error clears headers; without these a browser cannot read the error.
        self.set_cors_headers()
        super().write_error(status_code, **kwargs)

    def options(self, *args: Any) -> None:
        self.set_cors_headers()
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Content-Type, Last-Event-ID")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()


class StreamHandler(CorsMixin):
    """Serves one consumer's stream; mountable in any Tornado app (see embed)."""

    name = "events"

    async def get(self) -> None:
        self.set_cors_headers()
        last_event_id = self._last_event_id()
        consumer = await self._find_consumer()
        if self.ctx.state.draining:
            raise ApiError(503, "unavailable", "server is shutting down")
        self._start_stream(consumer, last_event_id)

    # --- request checks ---------------------------------------------------------------

    def _last_event_id(self) -> int | None:
        return resume_after(
            self.get_query_argument("last_event_id", None),
            self.request.headers.get("Last-Event-ID", ""),
        )

    async def _find_consumer(self) -> Consumer:
        consumer_id = self.get_query_argument("id", None)
        topics = requested_topics(self.request.query_arguments.get("topics"))
        manager = self.ctx.manager
        if consumer_id:
            consumer = manager.get(consumer_id)
            if consumer is None:
                raise ApiError(404, "not-found", "unknown or expired consumer id")
            return consumer
        check_may_create(self.ctx.settings, topics)
        try:
            consumer, _errors = await manager.create(topics=topics)
        except TooManyConsumers as exc:
            raise ApiError(429, "limit-exceeded", str(exc)) from exc
        return consumer

    # --- the stream -------------------------------------------------------------------

    def _start_stream(self, consumer: Consumer, last_event_id: int | None) -> None:
        headers = self.request.headers
        start_stream(
            self.ctx,
            consumer,
            last_event_id,
            version=self.request.version,
            cors=cors_headers(headers.get("Origin"), self.ctx.settings),
            client=lambda: (self.remote_ip, headers.get("User-Agent", "")),
            detach=self.detach,
        )


def start_stream(
    ctx: AppContext,
    consumer: Consumer,
    last_event_id: int | None,
    *,
    version: str,
    cors: dict[str, str],
    client: Callable[[], tuple[str, str]],
    detach: Callable[[], IOStream],
) -> None:
    """Take the socket from Tornado, attach it to ``consumer`` and write the opening.

    The opening is the response head, the retry and info frames, a gap error
    when the buffer no longer reaches ``last_event_id``, and the replay.
    ``client`` gives the ``stream.opened`` line's remote address and user agent;
    it is called only when the line is written.
    """
    settings = ctx.settings
    head = _response_head(version, cors)

    def on_close(conn: SseConnection, reason: str) -> None:
        ctx.manager.detach(consumer, conn)
        ctx.metrics.connections.dec()
        ctx.metrics.connections_closed.labels(reason).inc()
        ctx.metrics.stream_duration.observe(conn.duration)
        if reason == "slow_reader":
            ctx.metrics.slow_consumer_disconnects.inc()
        if log.is_enabled_for(logging.INFO):  # a hang-up wave would build every line for nothing
            log.info("stream.closed", consumer_id=consumer.id, **conn.as_log())

    # The front hands its socket over still registered with the loop for
    # readability (FrontConnection.detach): from here until the SseConnection
    # takes that registration over, nothing may fail or wait.
    sock = _take_socket(detach())
    if sock is None:
        return
    loop = asyncio.get_running_loop()
    if _client_gone(sock):  # e.g. while its consumer was being created
        loop.remove_reader(sock.fileno())
        sock.close()
        return
    conn = SseConnection(sock, loop, settings.max_write_buffer, ctx.manager.batcher, on_close)
    ctx.metrics.count_request(StreamHandler.name, 200)
    frames, gap = ctx.manager.attach(consumer, conn, last_event_id)
    ctx.metrics.connections.inc()
    ctx.metrics.connections_opened.inc()
    if log.is_enabled_for(logging.INFO):
        remote_ip, user_agent = client()
        log.info(
            "stream.opened",
            consumer_id=consumer.id,
            remote_ip=remote_ip,
            user_agent=user_agent,
            last_event_id=last_event_id,
            replayed=len(frames),
        )
    parts = [
        head,
        sse.retry_frame(int(settings.retry * 1000)),
        _info_frame(settings, consumer),
    ]
    if gap is not None:
        first, lost = gap
        parts.append(
            sse.error_frame(
                sse.RESUME_GAP,
                f"{lost} message(s) were dropped from the buffer; resuming at id {first}",
                first_available_id=first,
                lost=lost,
            )
        )
    replay_bytes = sum(len(frame) for frame in frames)
    conn.send_initial(b"".join(parts + frames), len(frames), replay_bytes)


def _take_socket(iostream: IOStream) -> socket.socket | None:
    """The connection's socket, no longer watched by Tornado; None if it is closed.

    The stream's :class:`SseConnection` owns the socket from here on: the
    IOStream is dropped unused, so nothing else reads, writes or closes it.
    """
    sock = iostream.socket
    if iostream.closed() or sock is None:
        return None
    # Tornado's HTTP layer watches an idle connection's socket for its hang-up. A
    # front connection's socket was never Tornado's (remove_handler then does
    # nothing): it arrives registered by the front, for the SseConnection to take.
    iostream.io_loop.remove_handler(sock.fileno())
    return sock


def _client_gone(sock: socket.socket) -> bool:
    """Whether the client has hung up (nothing may be watching the socket before the stream)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False  # connected, nothing sent: the usual case
    except OSError:
        return True


def _response_head(version: str, cors: dict[str, str]) -> bytes:
    headers = {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "Connection": "close",
        "Date": http_date(),
        **cors,
    }
    lines = [f"{version} 200 OK"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _info_frame(settings: Settings, consumer: Consumer) -> bytes:
    config = {
        "consumer_id": consumer.id,
        "consumer_ttl_millis": int(settings.consumer_ttl * 1000),
        "heartbeat_millis": int(settings.heartbeat * 1000),
        "retry_millis": int(settings.retry * 1000),
        "event_name": settings.event_name,
        "last_event_id": consumer.last_id,
    }
    return sse.info_frame(config, sorted(consumer.topics))


class ClientSubscriptionHandler(CorsMixin):
    """``POST /subscriptions`` on the public listener (off unless enabled)."""

    name = "client_subscriptions"

    async def post(self) -> None:
        self.set_cors_headers()
        body = self.json_body(required=True)
        unknown = set(body) - {"consumer_id", "add", "remove"}
        if unknown:  # a misspelt "add" must not look like a successful no-op
            raise ApiError(400, "bad-request", f"unknown field(s): {', '.join(sorted(unknown))}")
        consumer_id = body.get("consumer_id")
        if consumer_id_problem(consumer_id) and not isinstance(consumer_id, str):
            raise ApiError(400, "bad-request", "consumer_id must be a string")
        consumer = self.ctx.manager.get(str(consumer_id))
        if consumer is None:
            raise ApiError(404, "not-found", "unknown or expired consumer id")
        add, remove = topic_lists(body)
        allow = self.ctx.settings.client_subscriptions.allow
        forbidden = [t for t in add if not topic_allowed(t, allow)]
        allowed = [t for t in add if topic_allowed(t, allow)]
        errors = await self.ctx.manager.update(consumer, add=allowed, remove=remove)
        result = [
            {"topic": t, "code": "forbidden", "message": "topic is not allowed for clients"}
            for t in forbidden
        ] + [e.as_dict() for e in errors]
        self.send_json(
            {
                "consumer_id": consumer.id,
                "subscriptions": sorted(consumer.topics),
                "errors": result,
            }
        )


def topic_lists(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``add`` and ``remove`` from a subscriptions body, validated (400 on bad input)."""
    lists: list[list[str]] = []
    for key in ("add", "remove"):
        value = body.get(key, [])
        if value is None:
            value = []
        if not isinstance(value, list):
            raise ApiError(400, "bad-request", f"{key!r} must be a list of topics")
        for topic in value:
            problem = topic_problem(topic)
            if problem:
                raise ApiError(400, "bad-topic", f"{key}: {topic!r}: {problem}")
        lists.append(value)
    return lists[0], lists[1]


__all__ = ["ClientSubscriptionHandler", "ConsumerExists", "StreamHandler", "topic_lists"]
