"""Tornado applications for the two listeners, joined from each feature's routes."""

from __future__ import annotations

import dataclasses
from typing import Any

from tornado import web

from service.config import ClientSubscriptionSettings
from service.consumers import handlers as control
from service.consumers.events import events_route
from service.consumers.publish import publish_route
from service.consumers.stream import ClientSubscriptionHandler, StreamHandler
from service.context import AppContext
from service.web.base import NotFoundHandler
from service.web.demo import (
    DEMO_ALLOW,
    ClientScriptHandler,
    DemoConsumerHandler,
    DemoPageHandler,
)
from service.web.ops import MetricsHandler, health_handlers
from service.web.router import Router


def _routes(ctx: AppContext, table: list[tuple[str, Any]]) -> list[Any]:
    return [web.url(pattern, handler, {"ctx": ctx}) for pattern, handler in table]


def _application(ctx: AppContext, routes: list[Any]) -> web.Application:
    return web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        compress_response=False,
        # Requests are logged as http.request / stream.* events instead.
        log_function=lambda _handler: None,
    )


def make_public_app(ctx: AppContext) -> Router:
    """``/events``, health, the browser client, and optional extras.

    ``GET /events`` is opened before routing (``service.consumers.events``).
    """
    table: list[tuple[str, Any]] = [
        (r"/events", StreamHandler),
        (r"/unifrost(\.js|\.mjs|\.d\.ts)", ClientScriptHandler),
        *health_handlers,
    ]
    if ctx.settings.demo:
        table += [(r"/", DemoPageHandler), (r"/demo/consumers", DemoConsumerHandler)]
    routes = _routes(ctx, table)
    subscriptions = _client_subscriptions_context(ctx)
    if subscriptions is not None:
        routes.append(web.url(r"/subscriptions", ClientSubscriptionHandler, {"ctx": subscriptions}))
    return Router(_application(ctx, routes), {("GET", "/events"): events_route(ctx)})


def _client_subscriptions_context(ctx: AppContext) -> AppContext | None:
    """The context ``POST /subscriptions`` runs with, or None when it is off.

    Demo mode turns it on for the demo topics when it is not configured, so
    visitors can add and remove them from the page.
    """
    settings = ctx.settings
    if settings.client_subscriptions.enabled:
        return ctx
    if not settings.demo:
        return None
    demo = ClientSubscriptionSettings(enabled=True, allow=DEMO_ALLOW)
    return dataclasses.replace(
        ctx, settings=dataclasses.replace(settings, client_subscriptions=demo)
    )


def make_admin_app(ctx: AppContext) -> Router:
    """The control API, ``/metrics`` and health (``POST /publish`` answered before routing)."""
    table = [*control.default_handlers, (r"/metrics", MetricsHandler), *health_handlers]
    app = _application(ctx, _routes(ctx, table))
    return Router(app, {("POST", "/publish"): publish_route(ctx)})
