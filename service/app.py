"""Tornado applications for the two listeners, joined from each feature's routes."""

from __future__ import annotations

from typing import Any

from tornado import web

from service.consumers import handlers as control
from service.consumers.stream import ClientSubscriptionHandler, StreamHandler
from service.context import AppContext
from service.web.base import NotFoundHandler
from service.web.demo import ClientScriptHandler, DemoPageHandler
from service.web.ops import MetricsHandler, health_handlers


def _routes(ctx: AppContext, table: list[tuple[str, Any]]) -> list[Any]:
    return [web.url(pattern, handler, {"ctx": ctx}) for pattern, handler in table]


def _application(ctx: AppContext, table: list[tuple[str, Any]]) -> web.Application:
    return web.Application(
        _routes(ctx, table),
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        compress_response=False,
        # Requests are logged as http.request / stream.* events instead.
        log_function=lambda _handler: None,
    )


def make_public_app(ctx: AppContext) -> web.Application:
    """``/events``, health, the browser client, and optional extras."""
    table: list[tuple[str, Any]] = [
        (r"/events", StreamHandler),
        (r"/unifrost\.js", ClientScriptHandler),
        *health_handlers,
    ]
    if ctx.settings.client_subscriptions.enabled:
        table.append((r"/subscriptions", ClientSubscriptionHandler))
    if ctx.settings.demo:
        table.append((r"/", DemoPageHandler))
    return _application(ctx, table)


def make_admin_app(ctx: AppContext) -> web.Application:
    """The control API, ``/metrics`` and health."""
    table = [*control.default_handlers, (r"/metrics", MetricsHandler), *health_handlers]
    return _application(ctx, table)
