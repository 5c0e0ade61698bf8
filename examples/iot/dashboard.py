"""The dashboard's backend: serves the page and gives each visitor a consumer.

A new consumer starts on the temperature filter. The page itself switches
between filters through unifrost's public ``POST /subscriptions``, which
``unifrost.yaml`` allows for ``sensors/*`` (client subscriptions). The stream and
that call go to unifrost's public listener, another origin than this app's:
hence ``cors_origins``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

HERE = Path(__file__).resolve().parent
#: MQTT topic filters the page offers: ``+`` is one level, ``#`` all the rest.
FILTERS = ("sensors/+/+/temperature", "sensors/#")


class PageHandler(web.RequestHandler):
    def initialize(self, unifrost: str) -> None:
        self.unifrost = unifrost

    def get(self) -> None:
        self.render("index.html", unifrost=self.unifrost, filters=list(FILTERS))


class ConsumerHandler(web.RequestHandler):
    """``POST /api/consumer``: a consumer of the first filter, for one page."""

    def initialize(self, admin: str) -> None:
        self.admin = admin

    async def post(self) -> None:
        try:
            response = await AsyncHTTPClient().fetch(
                f"{self.admin}/consumers", method="POST", body=json.dumps({"topics": FILTERS[:1]})
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
