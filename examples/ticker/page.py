"""The ticker page's backend: serves the page and gives each visitor a consumer.

Consumers are created through unifrost's admin API, which browsers never reach.
The page then streams from unifrost's public listener, which is another origin
than this app's: hence ``cors_origins`` in ``unifrost.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from examples.ticker.feed import SYMBOLS, topic_of

HERE = Path(__file__).resolve().parent


class PageHandler(web.RequestHandler):
    def initialize(self, unifrost: str) -> None:
        self.unifrost = unifrost

    def get(self) -> None:
        self.render("index.html", unifrost=self.unifrost, symbols=list(SYMBOLS))


class ConsumerHandler(web.RequestHandler):
    """``POST /api/consumer``: a consumer of every symbol's topic, for one page."""

    def initialize(self, admin: str) -> None:
        self.admin = admin

    async def post(self) -> None:
        topics = [topic_of(symbol) for symbol in SYMBOLS]
        try:
            response = await AsyncHTTPClient().fetch(
                f"{self.admin}/consumers", method="POST", body=json.dumps({"topics": topics})
            )
        except (OSError, HTTPClientError) as exc:  # unifrost down, or it refused
            raise web.HTTPError(502, f"unifrost admin API: {exc}") from exc
        self.write({"consumer_id": json.loads(response.body)["consumer_id"]})


def make_app(unifrost: str, admin: str) -> web.Application:
    """``unifrost``: its public listener as browsers reach it; ``admin``: its admin API."""
    return web.Application(
        [
            (r"/", PageHandler, {"unifrost": unifrost}),
            (r"/api/consumer", ConsumerHandler, {"admin": admin}),
        ],
        template_path=str(HERE),
    )
