"""Live chat: unifrost embedded in a Tornado app, on the in-memory broker.

Each room is a topic, ``chat.<room>``. A page that opens a room asks the app for
a consumer subscribed to it; a posted message is published to the room's topic,
and every page with the room open receives it over SSE, the sender's included.
The app never keeps messages: unifrost's per-consumer buffer is what lets a
page that reconnects (or reloads within the consumer's TTL) catch up.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from pathlib import Path
from typing import Any

from tornado import web

from service.embed import Relay, consumer_ttl, new_stream_handler

HERE = Path(__file__).resolve().parent
ROOM = r"([a-z0-9-]{1,32})"
MAX_NAME = 32
MAX_TEXT = 500


def room_topic(room: str) -> str:
    return f"chat.{room}"


class RoomHandler(web.RequestHandler):
    def initialize(self, relay: Relay) -> None:
        self.relay = relay

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) else None
        self.finish({"error": message or HTTPStatus(status_code).phrase})


class JoinHandler(RoomHandler):
    """``POST /api/rooms/<room>/consumer``: a consumer for one page in one room."""

    async def post(self, room: str) -> None:
        consumer_id = await self.relay.new_consumer()
        await self.relay.subscribe(consumer_id, room_topic(room))
        self.write({"consumer_id": consumer_id})


class MessageHandler(RoomHandler):
    """``POST /api/rooms/<room>/messages`` ``{"name", "text"}``: say something."""

    async def post(self, room: str) -> None:
        try:
            body = json.loads(self.request.body)
            name, text = str(body["name"]).strip(), str(body["text"]).strip()
        except (ValueError, KeyError, TypeError):
            raise web.HTTPError(400, 'expected JSON {"name": ..., "text": ...}') from None
        if not (0 < len(name) <= MAX_NAME and 0 < len(text) <= MAX_TEXT):
            raise web.HTTPError(400, f"name: 1-{MAX_NAME} characters, text: 1-{MAX_TEXT}")
        message = json.dumps({"name": name, "text": text})
        await self.relay.publish(room_topic(room), message.encode())
        self.set_status(202)


def make_app(relay: Relay) -> web.Application:
    deps = {"relay": relay}
    return web.Application(
        [
            (r"/()", web.StaticFileHandler, {"path": HERE, "default_filename": "index.html"}),
            relay.client_route(),  # /unifrost.js, as unifrost serve has it
            (rf"/api/rooms/{ROOM}/consumer", JoinHandler, deps),
            (rf"/api/rooms/{ROOM}/messages", MessageHandler, deps),
            relay.route("/events"),
        ]
    )


async def main(port: int = 8000) -> None:
    relay = await new_stream_handler("memory://", consumer_ttl(60))
    make_app(relay).listen(port, "127.0.0.1")
    print(f"chat on http://127.0.0.1:{port}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await relay.close()
