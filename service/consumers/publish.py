"""``POST /publish?topic=<t>``: the raw body goes to the broker as one message.

A publish is the one control-API call made once per message, so its fixed
cost bounds throughput whenever a message reaches only a few streams, so it is
answered by :class:`PublishRequest`, without a ``RequestHandler``: read straight
from the socket by the admin listener's :class:`~service.web.front.FrontServer`
when it is plain, through Tornado's HTTP layer and the
:class:`~service.web.router.Router` otherwise.

The answers are the control API's: the bearer token is checked first, then
the body limits (a declared body far over ``max_message_bytes`` is refused
from its ``Content-Length``, one somewhat over it is read and discarded so the
client still gets the JSON 413), then the topic; broker failures are 503
``broker-unavailable`` / 502 ``broker-error``; success is 202
``{"topic", "bytes"}``. Requests are counted and logged like every other
control-API call (``handler="publish"``, ``http.request``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from http import HTTPStatus

import orjson
from tornado import httputil
from tornado.escape import parse_qs_bytes
from tornado.log import app_log

from service.brokers.base import BrokerError, BrokerUnavailable
from service.consumers.consumer import topic_problem
from service.context import AppContext
from service.log import get_logger
from service.web.base import (
    ApiError,
    check_admin_token,
    declares_more_than,
    drain_limit,
    error_body,
    http_date,
)
from service.web.client_ip import client_ip
from service.web.front import FrontConnection
from service.web.router import Fallback, Route

log = get_logger("unifrost.http")

PATH = "/publish"
#: ``topic=<t>`` and nothing else, with nothing percent- or plus-encoded.
_PLAIN_TOPIC_QUERY = re.compile(rb"topic=([^&;%+]*)")


def publish_route(ctx: AppContext) -> Route:
    """``POST /publish`` for the admin listener's :class:`~service.web.router.Router`."""

    def route(conn: httputil.HTTPConnection, _fallback: Fallback) -> PublishRequest:
        return PublishRequest(ctx, conn)

    return route


class PublishRequest(httputil.HTTPMessageDelegate):
    """One ``POST /publish``: read the body within limits, publish, answer."""

    def __init__(self, ctx: AppContext, conn: httputil.HTTPConnection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.started = time.perf_counter()
        self.limit = ctx.settings.max_message_bytes
        self.chunks: list[bytes] = []
        self.size = 0
        self.answered = False
        self.path = ""
        self.headers = _NO_HEADERS  # until headers_received

    # --- reading ---------------------------------------------------------------------

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.path = start_line.path
        self.headers = headers
        try:
            check_admin_token(self.ctx.settings.admin_token, headers)
            if not isinstance(self.conn, FrontConnection):
                # Tornado reads the body still to come: refuse or cap it by its length.
                # (The front has the whole body already; finish() checks its size.)
                limit = drain_limit(self.limit)
                if declares_more_than(headers, limit):
                    raise _too_large(self.limit)
                self.conn.set_max_body_size(limit)  # type: ignore[attr-defined]
        except ApiError as exc:
            self._answer_error(exc)

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= self.limit and not self.answered:
            self.chunks.append(chunk)

    def finish(self) -> None:
        if self.answered:
            return
        try:
            topic = self._topic()
            if self.size > self.limit:
                raise _too_large(self.limit)
        except ApiError as exc:
            self._answer_error(exc)
            return
        body = b"".join(self.chunks)
        self.chunks = []
        try:
            # An in-process broker delivers at once: no task, no extra loop step, and
            # the frames reach the sockets before the answer, so a publisher is paced
            # by delivery.
            batcher = self.ctx.manager.batcher
            if batcher.write_through(self.ctx.broker.publish_now, topic, body):
                self._accepted(topic, body)
                return
        except Exception as exc:
            self._failed(exc)
            return
        publishing = asyncio.ensure_future(self._publish(topic, body))
        publishing.add_done_callback(self._published)

    def on_connection_close(self) -> None:
        self.chunks = []

    def _topic(self) -> str:
        return _topic_of(self.path)

    # --- publishing --------------------------------------------------------------------

    async def _publish(self, topic: str, body: bytes) -> None:
        await self.ctx.broker.publish(topic, body)
        # A driver that fanned the message out itself just now: as above.
        self.ctx.manager.batcher.flush_now()
        self._accepted(topic, body)

    def _accepted(self, topic: str, body: bytes) -> None:
        # The control API's JSON layout, without json.dumps' cost per message.
        answer = b'{"topic": %b, "bytes": %d}' % (orjson.dumps(topic), len(body))
        self._answer(202, answer)

    def _published(self, publishing: asyncio.Future[None]) -> None:
        if not publishing.cancelled() and publishing.exception() is not None:
            self._failed(publishing.exception())

    def _failed(self, exc: BaseException | None) -> None:
        if isinstance(exc, BrokerUnavailable):
            self._answer_error(ApiError(503, "broker-unavailable", str(exc)))
        elif isinstance(exc, BrokerError):
            self._answer_error(ApiError(502, "broker-error", str(exc)))
        else:
            app_log.error("Uncaught exception POST %s", PATH, exc_info=exc)
            self._answer_error(ApiError(500, "error", "Internal Server Error"))

    # --- answering ---------------------------------------------------------------------

    def _answer_error(self, exc: ApiError) -> None:
        self._answer(exc.status_code, error_body(exc.code, exc.message), exc.headers)

    def _answer(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        if self.answered:
            return
        self.answered = True
        if isinstance(self.conn, FrontConnection) and not extra:
            self.conn.respond_json(status, body, http_date())
            self._record(status)
            return
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Date", http_date()),
            *(extra or {}).items(),
        ]
        if isinstance(self.conn, FrontConnection):
            self.conn.respond(status, headers, body)
        else:
            start_line = httputil.ResponseStartLine("HTTP/1.1", status, HTTPStatus(status).phrase)
            self.conn.write_headers(start_line, httputil.HTTPHeaders(dict(headers)), body)
            self.conn.finish()
        self._record(status)

    def _record(self, status: int) -> None:
        elapsed = time.perf_counter() - self.started
        self.ctx.metrics.count_request("publish", status, elapsed)
        if not log.is_enabled_for(logging.INFO):
            return  # the line would be dropped: no need for its client address
        context = getattr(self.conn, "context", None)
        peer = getattr(context, "remote_ip", "") or ""
        log.info(
            "http.request",
            method="POST",
            path=PATH,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            remote_ip=client_ip(peer, self.headers, self.ctx.settings.trusted_proxies),
        )


_NO_HEADERS = httputil.HTTPHeaders()


@functools.lru_cache(maxsize=4096)
def _topic_of(path: str) -> str:
    """The topic the request's path and query name, or ApiError; remembered, as a
    publisher repeats them for every message (the most recently used 4,096, refusals
    not kept)."""
    query = path.partition("?")[2].encode("latin-1")
    # The raw value: Tornado's argument helpers strip whitespace and turn control
    # characters into spaces, which would publish to a different topic.
    plain = _PLAIN_TOPIC_QUERY.fullmatch(query)
    values: list[bytes] | None
    if plain is not None:  # the usual query: nothing to decode
        values = [plain.group(1)]
    else:
        values = parse_qs_bytes(query, keep_blank_values=True).get("topic")
    if not values:
        raise ApiError(400, "bad-topic", "missing ?topic=")
    try:
        topic = values[-1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad-topic", "topic is not valid UTF-8") from exc
    problem = topic_problem(topic)
    if problem:
        raise ApiError(400, "bad-topic", problem)
    return topic


def _too_large(limit: int) -> ApiError:
    # Tornado would otherwise keep reading the rest of a body we refuse.
    return ApiError(
        413,
        "payload-too-large",
        f"body exceeds {limit} bytes",
        headers={"Connection": "close"},
    )
