"""A Tornado app that mounts the unifrost stream behind its own login.

Run it with ``.venv/bin/python -m examples.embedded`` and try::

    curl -c jar -X POST 'http://127.0.0.1:8000/login?user=alice'
    ID=$(curl -b jar -s -X POST http://127.0.0.1:8000/my/consumer | jq -r .consumer_id)
    curl -b jar -N "http://127.0.0.1:8000/events?id=$ID" &
    curl -X POST 'http://127.0.0.1:8000/notify?user=alice' -d 'hello alice'

The app owns authentication: a signed cookie names the user, each consumer is
recorded as belonging to the user who created it, and the stream handler
subclass refuses anyone else. unifrost only relays.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tornado import web

from service.embed import Relay, StreamHandler, consumer_ttl, new_stream_handler
from service.web.base import ApiError


class AppHandler(web.RequestHandler):
    def initialize(self, relay: Relay, owners: dict[str, str]) -> None:
        self.relay = relay
        self.owners = owners

    def get_current_user(self) -> str | None:
        user = self.get_signed_cookie("user")
        return user.decode() if user else None


class LoginHandler(AppHandler):
    def post(self) -> None:
        # A real app checks a password here; the example trusts the name.
        self.set_signed_cookie("user", self.get_argument("user"), httponly=True)
        self.write({"user": self.get_argument("user")})


class MyConsumerHandler(AppHandler):
    @web.authenticated
    async def post(self) -> None:
        user = self.current_user
        consumer_id = await self.relay.new_consumer()
        await self.relay.subscribe(consumer_id, f"user.{user}")
        await self.relay.subscribe(consumer_id, "announcements")
        self.owners[consumer_id] = user
        self.write({"consumer_id": consumer_id})


class NotifyHandler(AppHandler):
    async def post(self) -> None:
        await self.relay.publish(f"user.{self.get_argument('user')}", self.request.body)
        self.set_status(202)


class AuthenticatedStream(StreamHandler):
    """unifrost's stream handler, serving only the consumer's owner."""

    def prepare(self) -> None:
        super().prepare()
        user = self.get_signed_cookie("user")
        if user is None:
            raise ApiError(401, "unauthorized", "log in first")
        owner = self.settings["owners"].get(self.get_query_argument("id", ""))
        if owner != user.decode():
            raise ApiError(403, "forbidden", "not your consumer")


def make_app(relay: Relay, cookie_secret: str = "change-me") -> web.Application:
    owners: dict[str, str] = {}
    deps: dict[str, Any] = {"relay": relay, "owners": owners}
    return web.Application(
        [
            (r"/login", LoginHandler, deps),
            (r"/my/consumer", MyConsumerHandler, deps),
            (r"/notify", NotifyHandler, deps),
            relay.route("/events", AuthenticatedStream),
        ],
        cookie_secret=cookie_secret,
        owners=owners,
        login_url="/login",
    )


async def main(port: int = 8000) -> None:
    relay = await new_stream_handler("memory://", consumer_ttl(30))
    make_app(relay).listen(port, "127.0.0.1")
    print(f"embedded example listening on 127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await relay.close()
