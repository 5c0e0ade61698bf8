"""``GET /events`` on the public listener, opened without a ``RequestHandler``.

Opening a stream is the request a fleet of browsers makes all at once after a
deploy or a network blip, and Tornado's routing and ``RequestHandler`` cost as
much again as its HTTP parsing. So :class:`EventsRequest` (given the request by
the listener's :class:`~service.web.front.FrontServer`, or by the
:class:`~service.web.router.Router` when Tornado read it) opens the plainly
valid requests itself: a known consumer id, or topics to create a consumer
from, a well-formed or absent event id, no body, a server that is not draining.

Every other request, and any failure before the stream has started, is handed
to :class:`~service.consumers.stream.StreamHandler` unchanged, which answers it
as it answers requests in an embedding application. The two share the checks
(``requested_topics``, ``resume_after``, ``check_may_create``) and the code that
starts the stream (``start_stream``), so a stream opened either way is the same.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Protocol, cast

from tornado import httputil
from tornado.escape import parse_qs_bytes
from tornado.iostream import IOStream

from service.consumers.consumer import Consumer
from service.consumers.stream import (
    check_may_create,
    cors_headers,
    requested_topics,
    resume_after,
    start_stream,
)
from service.context import AppContext
from service.web.base import ApiError
from service.web.client_ip import client_ip
from service.web.router import Fallback, Route

#: Ids the stream handler would read back unchanged (no decoding, stripping or
#: control characters); anything else is left to it.
_PLAIN_ID = re.compile(rb"[A-Za-z0-9._~-]{1,128}")


class StreamConnection(Protocol):
    """A connection a stream can take over: Tornado's ``HTTP1Connection``, or the front's."""

    context: object

    def detach(self) -> IOStream: ...


def events_route(ctx: AppContext) -> Route:
    """``GET /events`` for the public listener's :class:`~service.web.router.Router`."""

    def route(conn: httputil.HTTPConnection, fallback: Fallback) -> EventsRequest:
        return EventsRequest(ctx, cast(StreamConnection, conn), fallback)

    return route


class EventsRequest(httputil.HTTPMessageDelegate):
    """One ``GET /events``: open the stream here, or pass the request on."""

    __slots__ = ("conn", "ctx", "delegate", "fallback", "headers", "opening", "start_line")

    def __init__(self, ctx: AppContext, conn: StreamConnection, fallback: Fallback) -> None:
        self.ctx = ctx
        self.conn = conn
        self.fallback = fallback
        self.start_line = httputil.RequestStartLine("GET", "/events", "HTTP/1.1")
        self.headers = httputil.HTTPHeaders()
        #: The application's delegate, once the request is passed on.
        self.delegate: httputil.HTTPMessageDelegate | None = None
        #: Creating the consumer, when the stream asks for one.
        self.opening: asyncio.Future[None] | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.start_line = start_line
        self.headers = headers
        if headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers:
            self.delegate = self.fallback()  # a GET with a body: unusual, not ours
            return self.delegate.headers_received(start_line, headers)
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        assert self.delegate is not None  # only requests passed on have bodies
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        if self.delegate is not None:
            self.delegate.finish()
            return
        request = self._plain_request()
        if request is None:
            self._pass_on()
            return
        consumer_id, topics, last_event_id = request
        if consumer_id is None:
            self.opening = asyncio.ensure_future(self._create_and_start(topics, last_event_id))
            return
        consumer = self.ctx.manager.get(consumer_id)
        if consumer is None:
            self._pass_on()  # the handler answers the 404
            return
        self._start(consumer, last_event_id)

    def on_connection_close(self) -> None:
        if self.delegate is not None:
            self.delegate.on_connection_close()

    # --- deciding -----------------------------------------------------------------------

    def _plain_request(self) -> tuple[str | None, list[str], int | None] | None:
        """``(consumer id, topics, last event id)`` when this is ours to open, else None."""
        ctx = self.ctx
        if ctx.state.draining:
            return None
        arguments = parse_qs_bytes(
            self.start_line.path.partition("?")[2].encode("latin-1"), keep_blank_values=True
        )
        try:
            topics = requested_topics(arguments.get("topics"))
            query_ids = arguments.get("last_event_id")
            last_event_id = resume_after(
                query_ids[-1].decode("latin-1") if query_ids else None,
                self.headers.get("Last-Event-ID", ""),
            )
            ids = arguments.get("id")
            if ids is None:
                check_may_create(ctx.settings, topics)
                return None, topics, last_event_id
        except ApiError:
            return None  # the handler answers it
        if not _PLAIN_ID.fullmatch(ids[-1]):
            return None
        return ids[-1].decode("ascii"), topics, last_event_id

    def _pass_on(self) -> None:
        """Let the application answer this request, as if it had gone there first."""
        self.delegate = self.fallback()
        # For a handler that streams bodies this returns when it is ready for the
        # body; there is none, and the handler finishes the response by itself.
        self.delegate.headers_received(self.start_line, self.headers)
        self.delegate.finish()

    # --- opening ------------------------------------------------------------------------

    async def _create_and_start(self, topics: list[str], last_event_id: int | None) -> None:
        try:
            consumer, _errors = await self.ctx.manager.create(topics=topics)
        except Exception:
            # Nothing is written yet (e.g. the consumer limit is reached): the handler
            # tries again and answers (429, 500).
            self._pass_on()
            return
        if self.ctx.state.draining:  # began while the consumer was created: the handler's 503
            self._pass_on()
            return
        self._start(consumer, last_event_id)

    def _start(self, consumer: Consumer, last_event_id: int | None) -> None:
        headers = self.headers
        settings = self.ctx.settings
        peer = getattr(self.conn.context, "remote_ip", "") or ""
        start_stream(
            self.ctx,
            consumer,
            last_event_id,
            version=self.start_line.version,
            cors=cors_headers(headers.get("Origin"), settings),
            client=lambda: (
                client_ip(peer, headers, settings.trusted_proxies),
                headers.get("User-Agent", ""),
            ),
            detach=self.conn.detach,
        )
