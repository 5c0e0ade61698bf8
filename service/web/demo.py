"""Demo mode and the browser client: the page, its publisher, ``/unifrost.js``.

The demo plays the part of an app backend: the page handler creates a consumer
subscribed to the starting demo topics and hands its id to the browser, and
``POST /demo/consumers`` makes a new one when that has expired. Visitors add
and remove ``demo/*`` topics through the public ``POST /subscriptions``.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
from datetime import UTC, datetime
from typing import ClassVar

from service.brokers.base import Broker, BrokerError
from service.config import Settings
from service.consumers.manager import TooManyConsumers
from service.log import get_logger
from service.web.base import ApiError, BaseHandler

log = get_logger("unifrost.demo")

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "static")
#: Topics a demo consumer starts with.
DEMO_TOPICS = ("demo/clock", "demo/counter", "demo/quotes")
#: Every topic the demo publisher feeds; visitors may add the others.
DEMO_ALL_TOPICS = (*DEMO_TOPICS, "demo/weather", "demo/stocks")
#: What visitors may subscribe to in demo mode (unless configured otherwise).
DEMO_ALLOW = ("demo/*",)
_QUOTES = (
    "Messages flow from the broker to your browser.",
    "Reconnect inside the TTL and nothing is lost.",
    "One broker subscription per topic, fanned out in-process.",
    "Every frame has an id; Last-Event-ID resumes the stream.",
)
_SKIES = ("sunny", "cloudy", "light rain", "windy", "fog")


class DemoPageHandler(BaseHandler):
    name = "demo"

    async def get(self) -> None:
        consumer_id = await create_demo_consumer(self)
        with open(os.path.join(STATIC_DIR, "demo.html"), encoding="utf-8") as page:
            text = page.read()
        values = {
            "consumer_id": json.dumps(consumer_id),
            "topics": json.dumps(DEMO_ALL_TOPICS),
            "publish_command": html.escape(publish_command(self.ctx.settings, self.admin_port)),
        }
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(text)

    @property
    def admin_port(self) -> int:
        return self.ctx.state.admin_port or self.ctx.settings.admin_listen.port


class DemoConsumerHandler(BaseHandler):
    """``POST /demo/consumers``: the demo's stand-in for an app backend route."""

    name = "demo"

    async def post(self) -> None:
        self.send_json({"consumer_id": await create_demo_consumer(self)}, status=201)


async def create_demo_consumer(handler: BaseHandler) -> str:
    try:
        consumer, _ = await handler.ctx.manager.create(topics=DEMO_TOPICS)
    except TooManyConsumers as exc:
        raise ApiError(429, "limit-exceeded", str(exc)) from exc
    return consumer.id


def publish_command(settings: Settings, admin_port: int) -> str:
    """The curl line that publishes to a demo topic through the admin API."""
    host = settings.admin_listen.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    auth = ' -H "Authorization: Bearer $UNIFROST_ADMIN_TOKEN"' if settings.admin_token else ""
    return (
        f"curl -X POST{auth} 'http://{host}:{admin_port}/publish?topic=demo/quotes'"
        " -d 'Hello from curl'"
    )


class ClientScriptHandler(BaseHandler):
    """``/unifrost.js`` (plain script), ``/unifrost.mjs`` (ES module), ``/unifrost.d.ts``."""

    name = "client_js"
    _cache: ClassVar[dict[str, bytes]] = {}
    _TYPES: ClassVar[dict[str, str]] = {
        ".js": "application/javascript; charset=utf-8",
        ".mjs": "application/javascript; charset=utf-8",
        ".d.ts": "application/typescript; charset=utf-8",
    }
    # The same source as a module: it sets globalThis.UnifrostClient, then exports it.
    _MODULE_FOOTER = (
        b"\nconst UnifrostClient = globalThis.UnifrostClient;\n"
        b"export { UnifrostClient };\nexport default UnifrostClient;\n"
    )

    def get(self, suffix: str) -> None:
        self.set_header("Content-Type", self._TYPES[suffix])
        self.set_header("Cache-Control", "public, max-age=300")
        # Public code, no credentials: any page may import the module cross-origin.
        self.set_header("Access-Control-Allow-Origin", "*")
        self.finish(self._source(suffix))

    head = get  # Tornado sends the headers only

    @classmethod
    def _source(cls, suffix: str) -> bytes:
        if suffix not in cls._cache:
            name = "unifrost.d.ts" if suffix == ".d.ts" else "unifrost.js"
            with open(os.path.join(STATIC_DIR, name), "rb") as source:
                body = source.read()
            cls._cache[suffix] = body + cls._MODULE_FOOTER if suffix == ".mjs" else body
        return cls._cache[suffix]


def _messages(count: int) -> dict[str, str]:
    return {
        "demo/clock": datetime.now(UTC).isoformat(timespec="seconds"),
        "demo/counter": str(count),
        "demo/quotes": _QUOTES[count % len(_QUOTES)],
        "demo/weather": f"{12 + count * 7 % 11} °C, {_SKIES[count % len(_SKIES)]}",
        "demo/stocks": f"UFST {100 + (count * 37 % 200) / 10:.2f}",
    }


async def run_demo_publisher(broker: Broker, interval: float = 1.0) -> None:
    """Publish to every demo topic each ``interval`` until cancelled."""
    count = 0
    while True:
        count += 1
        for topic, text in _messages(count).items():
            try:
                await broker.publish(topic, text.encode())
            except BrokerError as exc:
                log.warning("demo.publish_failed", topic=topic, error=str(exc))
        await asyncio.sleep(interval)
