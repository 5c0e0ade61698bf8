"""The two hottest requests, answered below Tornado's routing.

A ``RequestHandler`` costs about as much again as Tornado's HTTP parsing: the
URL rules, the handler object and its header bookkeeping, a task for
``_execute``. Two requests are frequent enough for that to matter:
``POST /publish`` (once per message) and ``GET /events`` (once per stream, and
thousands at once when a fleet of browsers reconnects). :class:`Router` sits
between Tornado's ``HTTPServer`` and a listener's application, gives those
requests to a small ``HTTPMessageDelegate`` of their own, and hands every other
request to the application unchanged.

A route may still pass its request on: it gets a ``fallback`` that starts the
application's handling of the same request (see ``service.consumers.events``).

The listener's :class:`~service.web.front.FrontServer` gives the same routes
their plainly valid requests before Tornado's HTTP layer reads them at all;
the ``Router`` serves the connections it hands on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tornado import httputil, web

#: Starts the application's handling of the current request.
Fallback = Callable[[], httputil.HTTPMessageDelegate]
#: Makes the delegate for one request of a route.
Route = Callable[[httputil.HTTPConnection, Fallback], httputil.HTTPMessageDelegate]


class Router(httputil.HTTPServerConnectionDelegate):
    """A listener's entry: ``routes`` by ``(method, path)`` here, the rest to ``app``."""

    def __init__(self, app: web.Application, routes: Mapping[tuple[str, str], Route]) -> None:
        self.app = app
        self.routes = dict(routes)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _Dispatch(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)


class _Dispatch(httputil.HTTPMessageDelegate):
    """Chooses the request's handler once its start line is known."""

    __slots__ = ("delegate", "request_conn", "router", "server_conn")

    def __init__(
        self, router: Router, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> None:
        self.router = router
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.delegate: httputil.HTTPMessageDelegate | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        assert isinstance(start_line, httputil.RequestStartLine)
        route = self.router.routes.get((start_line.method, start_line.path.partition("?")[0]))
        if route is None:
            self.delegate = self.to_application()
        else:
            self.delegate = route(self.request_conn, self.to_application)
        return self.delegate.headers_received(start_line, headers)

    def to_application(self) -> httputil.HTTPMessageDelegate:
        return self.router.app.start_request(self.server_conn, self.request_conn)

    def data_received(self, chunk: bytes) -> Any:
        assert self.delegate is not None
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        assert self.delegate is not None
        self.delegate.finish()

    def on_connection_close(self) -> None:
        if self.delegate is not None:
            self.delegate.on_connection_close()
