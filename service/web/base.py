"""Base request handlers: JSON errors, request bodies with limits, auth, metrics.

Every error leaves as ``{"error": {"code", "message"}}`` with a 4xx/5xx status and
never a stack trace. Bodies are streamed so an oversized upload is refused with
a JSON 413 from its ``Content-Length`` before it is read.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from tornado import web

from service.context import AppContext
from service.log import get_logger
from service.web.client_ip import client_ip

log = get_logger("unifrost.http")

JSON_BODY_LIMIT = 256 * 1024
_MIN_DRAIN = 4 * 1024 * 1024

_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "limit-exceeded",
    503: "unavailable",
}


def drain_limit(body_limit: int) -> int:
    """Bodies up to this size are read (and discarded past ``body_limit``) to answer 413."""
    return max(4 * body_limit, _MIN_DRAIN)


#: Longer than any count or event id the server reaches; ``int`` refuses strings
#: of more than 4300 digits, so unbounded input must not reach it.
_MAX_DIGITS = 20


def is_ascii_number(value: str) -> bool:
    """``value`` is a non-negative integer of at most 20 ASCII digits.

    ``str.isdigit`` alone also accepts characters such as ``²`` that ``int`` refuses.
    """
    return len(value) <= _MAX_DIGITS and value.isascii() and value.isdigit()


def declares_more_than(headers: Mapping[str, str], limit: int) -> bool:
    """The request's ``Content-Length`` announces a body of more than ``limit`` bytes."""
    declared = headers.get("Content-Length")
    if declared is None or not (declared.isascii() and declared.isdigit()):
        return False
    digits = declared.lstrip("0") or "0"
    return len(digits) > _MAX_DIGITS or int(digits) > limit


def check_admin_token(token: str | None, headers: Mapping[str, str]) -> None:
    """Raise a 401 unless ``headers`` carry ``Authorization: Bearer <token>`` (when set)."""
    if not token:
        return
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="unifrost"'},
        )


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The ``Date`` header value for now, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def error_body(code: str, message: str) -> bytes:
    """The JSON body of every error answer."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class ApiError(web.HTTPError):
    """An error with a machine-readable ``code`` for the JSON body."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, reason=None)
        self.code = code
        self.message = message
        #: Sent with the error (``send_error`` clears headers set before raising).
        self.headers = headers or {}


@web.stream_request_body
class BaseHandler(web.RequestHandler):
    """JSON errors, bounded streamed bodies and per-request metrics."""

    #: ``handler`` label in the HTTP metrics.
    name = "other"
    #: Log each request as ``http.request`` (control API only).
    log_requests = False
    body_limit = JSON_BODY_LIMIT

    def initialize(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._chunks: list[bytes] = []
        self._body_size = 0

    # --- bodies -------------------------------------------------------------

    def prepare(self) -> None:
        # A body somewhat over the limit is read and discarded so the client, still
        # sending, gets the JSON 413 instead of a connection reset. A body far over
        # it is refused from its Content-Length alone, unread.
        limit = drain_limit(self.body_limit)
        if declares_more_than(self.request.headers, limit):
            self._refuse_body()
        connection = self.request.connection
        if connection is not None and hasattr(connection, "set_max_body_size"):
            connection.set_max_body_size(limit)

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size <= self.body_limit:
            self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        if self._body_size > self.body_limit:
            self._refuse_body()
        return b"".join(self._chunks)

    def _refuse_body(self) -> None:
        # Tornado would otherwise keep reading the rest of a body we refuse.
        raise ApiError(
            413,
            "payload-too-large",
            f"body exceeds {self.body_limit} bytes",
            headers={"Connection": "close"},
        )

    def json_body(self, *, required: bool = False) -> dict[str, Any]:
        """The body as a JSON object; ``{}`` for an empty optional body."""
        raw = self.body
        if not raw.strip():
            if required:
                raise ApiError(400, "bad-request", "a JSON object body is required")
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad-json", f"body is not valid JSON: {exc}") from exc
        except RecursionError as exc:  # the parser recurses once per nesting level
            raise ApiError(400, "bad-json", "body is nested too deeply") from exc
        if not isinstance(value, dict):
            raise ApiError(400, "bad-request", "body must be a JSON object")
        return value

    # --- responses ------------------------------------------------------------

    def send_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            code, message = exc.code, exc.message
            for name, value in exc.headers.items():
                self.set_header(name, value)
        else:
            code = _CODES.get(status_code, "error" if status_code >= 500 else "bad-request")
            message = (
                exc.log_message
                if isinstance(exc, web.HTTPError) and exc.log_message
                else HTTPStatus(status_code).phrase
                if status_code in HTTPStatus._value2member_map_
                else "error"
            )
        if status_code == 405:  # RFC 9110: a 405 says what the route does support
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(code, message))

    def allowed_methods(self) -> list[str]:
        """The methods this handler implements (its 405 answers' ``Allow`` header)."""
        cls = type(self)
        return [
            method
            for method in self.SUPPORTED_METHODS
            if getattr(cls, method.lower()) is not getattr(web.RequestHandler, method.lower())
        ]

    # --- bookkeeping ----------------------------------------------------------

    @property
    def remote_ip(self) -> str:
        return client_ip(
            self.request.remote_ip or "", self.request.headers, self.ctx.settings.trusted_proxies
        )

    def on_finish(self) -> None:
        status = self.get_status()
        elapsed = self.request.request_time()
        self.ctx.metrics.count_request(self.name, status, elapsed)
        if self.log_requests or status >= 500:
            log.info(
                "http.request",
                method=self.request.method,
                path=self.request.path,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                remote_ip=self.remote_ip,
            )

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Client errors are answered and counted; only real faults are logged.
        if not isinstance(value, web.HTTPError):
            super().log_exception(typ, value, tb)


class AdminHandler(BaseHandler):
    """Admin-listener routes: bearer token when ``admin_token`` is set."""

    log_requests = True

    def prepare(self) -> None:
        check_admin_token(self.ctx.settings.admin_token, self.request.headers)
        super().prepare()


class NotFoundHandler(BaseHandler):
    """Unknown routes on either listener."""

    name = "not_found"

    def prepare(self) -> None:
        raise ApiError(404, "not-found", f"no route for {self.request.path}")
