"""The control API (admin listener): consumers, subscriptions, publish.

Thin handlers over :class:`ConsumerManager`; every bad input is a JSON 4xx.
"""

from __future__ import annotations

from typing import Any

from service.consumers.consumer import Consumer, consumer_id_problem
from service.consumers.manager import ConsumerExists, TooManyConsumers
from service.consumers.stream import topic_lists
from service.web.base import AdminHandler, ApiError, is_ascii_number

_MAX_PAGE = 1000


class ConsumerResource(AdminHandler):
    def consumer(self, consumer_id: str) -> Consumer:
        consumer = self.ctx.manager.get(consumer_id)
        if consumer is None:
            raise ApiError(404, "not-found", f"no consumer {consumer_id!r}")
        return consumer


class ConsumersHandler(ConsumerResource):
    """``POST /consumers`` and ``GET /consumers?limit=&after=``."""

    name = "consumers"

    async def post(self) -> None:
        body = self.json_body()
        unknown = set(body) - {"id", "topics"}
        if unknown:
            raise ApiError(400, "bad-request", f"unknown field(s): {', '.join(sorted(unknown))}")
        consumer_id = body.get("id")
        if consumer_id is not None:
            problem = consumer_id_problem(consumer_id)
            if problem:
                raise ApiError(400, "bad-id", problem)
        topics, _ = topic_lists({"add": body.get("topics", [])})
        try:
            consumer, errors = await self.ctx.manager.create(consumer_id, topics)
        except ConsumerExists as exc:
            raise ApiError(409, "conflict", str(exc)) from exc
        except TooManyConsumers as exc:
            raise ApiError(429, "limit-exceeded", str(exc)) from exc
        self.send_json(
            {
                "consumer_id": consumer.id,
                "consumer_ttl_millis": int(self.ctx.settings.consumer_ttl * 1000),
                "subscriptions": sorted(consumer.topics),
                "errors": [e.as_dict() for e in errors],
            },
            status=201,
        )

    def get(self) -> None:
        raw_limit = self.get_query_argument("limit", "100")
        if not is_ascii_number(raw_limit) or not 1 <= int(raw_limit) <= _MAX_PAGE:
            raise ApiError(400, "bad-request", f"limit must be an integer 1-{_MAX_PAGE}")
        after = self.get_query_argument("after", None) or None
        ids, next_after = self.ctx.manager.page(int(raw_limit), after)
        self.send_json({"consumers": ids, "next": next_after, "count": len(self.ctx.manager)})


class ConsumerHandler(ConsumerResource):
    """``GET`` and ``DELETE /consumers/{id}``."""

    name = "consumer"

    def get(self, consumer_id: str) -> None:
        self.send_json(self.consumer(consumer_id).describe())

    def delete(self, consumer_id: str) -> None:
        if not self.ctx.manager.delete(consumer_id):
            raise ApiError(404, "not-found", f"no consumer {consumer_id!r}")
        self.set_status(204)
        self.finish()


class SubscriptionsHandler(ConsumerResource):
    """``POST /consumers/{id}/subscriptions`` with ``{"add": [...], "remove": [...]}``."""

    name = "subscriptions"

    async def post(self, consumer_id: str) -> None:
        consumer = self.consumer(consumer_id)
        body = self.json_body(required=True)
        unknown = set(body) - {"add", "remove"}
        if unknown:  # a misspelt "add" must not look like a successful no-op
            raise ApiError(400, "bad-request", f"unknown field(s): {', '.join(sorted(unknown))}")
        add, remove = topic_lists(body)
        errors = await self.ctx.manager.update(consumer, add=add, remove=remove)
        self.send_json(
            {
                "consumer_id": consumer.id,
                "subscriptions": sorted(consumer.topics),
                "errors": [e.as_dict() for e in errors],
            }
        )


class PublishHandler(AdminHandler):
    """``/publish`` for every method but POST: 405 (after the token check).

    ``POST /publish`` never reaches the application: the listener's
    :class:`~service.web.router.Router` gives it to
    :class:`~service.consumers.publish.PublishRequest` (see those modules for why).
    """

    name = "publish"

    def allowed_methods(self) -> list[str]:
        return ["POST"]


_ID = r"([A-Za-z0-9._~-]{1,128})"
_ANY = r"([^/]+)"

default_handlers: list[tuple[str, Any]] = [
    (r"/consumers", ConsumersHandler),
    (rf"/consumers/{_ID}", ConsumerHandler),
    (rf"/consumers/{_ID}/subscriptions", SubscriptionsHandler),
    # Ids outside the allowed alphabet are still answered (404), not routed elsewhere.
    (rf"/consumers/{_ANY}", ConsumerHandler),
    (rf"/consumers/{_ANY}/subscriptions", SubscriptionsHandler),
    (r"/publish", PublishHandler),
]
