"""Demo mode: a page that streams live demo topics, and the publisher feeding them.

The page handler plays the part of an app backend: it creates a consumer
subscribed to the demo topics and hands its id to the browser.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime

from service.brokers.base import Broker, BrokerError
from service.log import get_logger
from service.web.base import BaseHandler

log = get_logger("unifrost.demo")

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
DEMO_TOPICS = ("demo/clock", "demo/counter", "demo/quotes")
_QUOTES = (
    "Messages flow from the broker to your browser.",
    "Reconnect inside the TTL and nothing is lost.",
    "One broker subscription per topic, fanned out in-process.",
    "Every frame has an id; Last-Event-ID resumes the stream.",
)


class DemoPageHandler(BaseHandler):
    name = "demo"

    async def get(self) -> None:
        consumer, _ = await self.ctx.manager.create(topics=DEMO_TOPICS)
        with open(os.path.join(STATIC_DIR, "demo.html"), encoding="utf-8") as page:
            html = page.read()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(html.replace("{{consumer_id}}", json.dumps(consumer.id)))


class ClientScriptHandler(BaseHandler):
    """``/unifrost.js``, the browser client."""

    name = "client_js"
    _source: bytes | None = None

    def get(self) -> None:
        if ClientScriptHandler._source is None:
            with open(os.path.join(STATIC_DIR, "unifrost.js"), "rb") as script:
                ClientScriptHandler._source = script.read()
        self.set_header("Content-Type", "application/javascript; charset=utf-8")
        self.set_header("Cache-Control", "public, max-age=300")
        self.finish(ClientScriptHandler._source)

    head = get  # Tornado sends the headers only


async def run_demo_publisher(broker: Broker, interval: float = 1.0) -> None:
    """Publish to every demo topic each ``interval`` until cancelled."""
    count = 0
    while True:
        count += 1
        messages = {
            "demo/clock": datetime.now(UTC).isoformat(timespec="seconds"),
            "demo/counter": str(count),
            "demo/quotes": _QUOTES[count % len(_QUOTES)],
        }
        for topic, text in messages.items():
            try:
                await broker.publish(topic, text.encode())
            except BrokerError as exc:
                log.warning("demo.publish_failed", topic=topic, error=str(exc))
        await asyncio.sleep(interval)
