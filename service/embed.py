"""Embedding: the unifrost pieces inside your own Tornado application.

Mirrors the Go package's API in Python names:

=============================  ==========================================
Go (unifrost)                  Python (``service.embed``)
=============================  ==========================================
``NewStreamHandler(ctx, c)``   ``await new_stream_handler(broker, ...)``
``ConsumerTTL(d)``             ``consumer_ttl(seconds)`` option
``h.NewConsumer(ctx)``         ``await relay.new_consumer()``
``h.NewCustomConsumer(ctx,id)`` ``await relay.new_custom_consumer(id)``
``h.Subscribe(ctx, id, t)``    ``await relay.subscribe(id, topic)``
``h.Unsubscribe(ctx, id, t)``  ``await relay.unsubscribe(id, topic)``
``h.CloseConsumer(ctx, id)``   ``await relay.close_consumer(id)``
``h.Close(ctx)``               ``await relay.close()``
``http.Handle("/e", h)``       ``app.add_handlers(".*", [relay.route("/e")])``
=============================  ==========================================

To put the stream behind your own authentication, subclass
:class:`StreamHandler`, check the user in ``prepare`` (call ``super().prepare()``
first), and pass the subclass to :meth:`Relay.route`. See ``examples/embedded/``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from tornado import web

from service.brokers import open_broker
from service.brokers.base import Broker, BrokerError
from service.config import Settings
from service.consumers.consumer import consumer_id_problem, topic_problem
from service.consumers.hub import TopicHub
from service.consumers.manager import ConsumerManager
from service.consumers.stream import StreamHandler
from service.context import AppContext
from service.metrics import Metrics
from service.server import policy_from
from service.web.demo import ClientScriptHandler

__all__ = [
    "ConsumerNotFound",
    "Option",
    "Relay",
    "StreamHandler",
    "consumer_ttl",
    "new_stream_handler",
]

Option = Callable[[Settings], Settings]


def consumer_ttl(seconds: float) -> Option:
    """How long a consumer without an open stream is kept (Go: ``ConsumerTTL``)."""
    if seconds <= 0:
        raise ValueError("consumer_ttl must be positive")
    return lambda settings: dataclasses.replace(settings, consumer_ttl=float(seconds))


def with_settings(**changes: Any) -> Option:
    """Any other :class:`~service.config.Settings` field (heartbeat, buffer, ...)."""
    return lambda settings: dataclasses.replace(settings, **changes)


class ConsumerNotFound(KeyError):
    """No consumer has this id (never created, closed or evicted)."""


class Relay:
    """Consumers, the topic hub and a broker connection, mountable in any app."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    def route(self, path: str = "/events", handler: type[StreamHandler] = StreamHandler) -> Any:
        """A Tornado URL rule serving the SSE stream at ``path``."""
        return web.url(path, handler, {"ctx": self.ctx})

    def client_route(self, prefix: str = "/unifrost") -> Any:
        """A Tornado URL rule serving the browser client: ``<prefix>.js``, ``.mjs``, ``.d.ts``."""
        return web.url(
            rf"{re.escape(prefix)}(\.js|\.mjs|\.d\.ts)", ClientScriptHandler, {"ctx": self.ctx}
        )

    async def new_consumer(self) -> str:
        consumer, _ = await self.ctx.manager.create()
        return consumer.id

    async def new_custom_consumer(self, consumer_id: str) -> str:
        """Raises ValueError for a malformed id and ConsumerExists if it is taken."""
        problem = consumer_id_problem(consumer_id)
        if problem:
            raise ValueError(problem)
        consumer, _ = await self.ctx.manager.create(consumer_id)
        return consumer.id

    async def subscribe(self, consumer_id: str, topic: str) -> None:
        """Raises ConsumerNotFound, ValueError (bad topic) or BrokerError."""
        problem = topic_problem(topic)
        if problem:
            raise ValueError(problem)
        errors = await self.ctx.manager.update(self._consumer(consumer_id), add=[topic])
        if errors:
            raise BrokerError(errors[0].message)

    async def unsubscribe(self, consumer_id: str, topic: str) -> None:
        await self.ctx.manager.update(self._consumer(consumer_id), remove=[topic])

    async def close_consumer(self, consumer_id: str) -> None:
        if not self.ctx.manager.delete(consumer_id):
            raise ConsumerNotFound(consumer_id)

    async def publish(self, topic: str, body: bytes) -> None:
        """Publish through the relay's broker connection."""
        problem = topic_problem(topic)
        if problem:
            raise ValueError(problem)
        await self.ctx.broker.publish(topic, body)

    def subscriptions(self, consumer_id: str) -> list[str]:
        return sorted(self._consumer(consumer_id).topics)

    async def close(self) -> None:
        """Close every stream (``server shutting down``), every consumer and the broker."""
        self.ctx.state.draining = True
        self.ctx.manager.close_streams(self.ctx.settings.retry)
        await self.ctx.manager.close()
        await self.ctx.broker.close()

    def _consumer(self, consumer_id: str) -> Any:
        consumer = self.ctx.manager.get(consumer_id)
        if consumer is None:
            raise ConsumerNotFound(consumer_id)
        return consumer


async def new_stream_handler(
    broker: Broker | str = "memory://",
    *options: Option,
    registry: CollectorRegistry | None = None,
) -> Relay:
    """Connect to ``broker`` (a driver or a URL) and return a ready :class:`Relay`.

    Must be awaited on the IOLoop that will serve the streams.
    """
    settings = Settings()
    for option in options:
        settings = option(settings)
    driver = open_broker(broker, settings) if isinstance(broker, str) else broker
    metrics = Metrics(registry)
    hub = TopicHub(driver, metrics, settings.event_name)
    await driver.connect()
    manager = ConsumerManager(hub, metrics, policy_from(settings))
    return Relay(AppContext(settings, driver, hub, manager, metrics))
