"""The chat example over real HTTP: rooms are topics on the memory broker, every
page in a room gets every message of that room and nothing else; the page works
in Chromium; ``python -m examples.chat`` serves it and stops on Ctrl-C."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from examples.chat.app import make_app
from service.embed import Relay, new_stream_handler
from tests.brokers.local_server import free_port
from tests.browser.harness import browser
from tests.examples.runner import assert_clean_exit, example_process
from tests.support import Frame, SseClient, http


@dataclass
class Chat:
    relay: Relay
    address: tuple[str, int]
    streams: list[SseClient]

    async def join(self, room: str) -> SseClient:
        """What a page does: get a consumer for the room, open its stream."""
        response = await http(self.address, "POST", f"/api/rooms/{room}/consumer")
        assert response.status == 200, response.text
        stream = await SseClient(self.address).connect(response.json()["consumer_id"])
        self.streams.append(stream)
        assert stream.status == 200
        _, info = await stream.opening()
        assert info.inner["subscriptions"] == [f"chat.{room}"]
        return stream

    async def say(self, room: str, name: str, text: str) -> int:
        body = {"name": name, "text": text}
        return (await http(self.address, "POST", f"/api/rooms/{room}/messages", body)).status


@pytest.fixture
async def chat() -> AsyncIterator[Chat]:
    relay = await new_stream_handler("memory://")
    server = HTTPServer(make_app(relay))
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    app = Chat(relay, ("127.0.0.1", sockets[0].getsockname()[1]), [])
    try:
        yield app
    finally:
        for stream in app.streams:
            stream.close()
        server.stop()
        await relay.close()


def assert_said(frame: Frame, event_id: int, room: str, name: str, text: str) -> None:
    assert frame.id == str(event_id) and frame.topic == f"chat.{room}", frame
    assert json.loads(frame.payload) == {"name": name, "text": text}


async def test_everyone_in_the_room_gets_each_message_and_other_rooms_do_not(chat: Chat) -> None:
    alice, bob = await chat.join("lobby"), await chat.join("lobby")
    carol = await chat.join("garden")

    assert await chat.say("lobby", "alice", "hi all") == 202
    for stream in (alice, bob):
        assert_said(await stream.data_frame(), 1, "lobby", "alice", "hi all")

    assert await chat.say("garden", "carol", "roses <b>bloom</b>") == 202
    assert await chat.say("lobby", "bob", "hi alice") == 202
    # Carol's first message is her own: the lobby's never reached her.
    assert_said(await carol.data_frame(), 1, "garden", "carol", "roses <b>bloom</b>")
    # And the lobby's next is Bob's: the garden's never reached it.
    for stream in (alice, bob):
        assert_said(await stream.data_frame(), 2, "lobby", "bob", "hi alice")


async def test_bad_messages_are_refused_and_never_published(chat: Chat) -> None:
    stream = await chat.join("lobby")
    for body in [b"not json", b'{"name": "eve"}', b'{"name": " ", "text": "x"}']:
        response = await http(chat.address, "POST", "/api/rooms/lobby/messages", body)
        assert response.status == 400, response.text
        assert "error" in response.json()
    assert await chat.say("lobby", "eve", "x" * 501) == 400
    assert await chat.say("Lobby!", "eve", "hi") == 404
    assert await chat.say("lobby", "eve", "finally") == 202
    assert_said(await stream.data_frame(), 1, "lobby", "eve", "finally")


async def test_page_loads_the_browser_client(chat: Chat) -> None:
    page = await http(chat.address, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/unifrost.js"></script>' in page.text
    assert "new UnifrostClient(" in page.text
    script = await http(chat.address, "GET", "/unifrost.js")
    assert script.status == 200 and "root.UnifrostClient = UnifrostClient" in script.text


async def test_chat_page_in_chromium(chat: Chat) -> None:
    """Join, send from the page, and see a message sent by someone else."""
    base = f"http://127.0.0.1:{chat.address[1]}"
    listener = await chat.join("lobby")
    async with browser() as b:
        await b.goto(f"{base}/")
        await b.eval("document.getElementById('name').value = 'alice'")
        await b.eval("document.getElementById('join').requestSubmit()")
        await b.wait("document.getElementById('state').textContent === 'open'")
        await b.eval("document.getElementById('text').value = 'hello from <i>Chromium</i>'")
        await b.eval("document.getElementById('say').requestSubmit()")
        assert_said(await listener.data_frame(), 1, "lobby", "alice", "hello from <i>Chromium</i>")
        assert await chat.say("lobby", "bob", "welcome") == 202
        await b.wait("document.getElementById('messages').children.length === 2")
        items = await b.eval(
            "[...document.querySelectorAll('#messages li')].map((li) => li.textContent)"
        )
        assert items == ["alicehello from <i>Chromium</i>", "bobwelcome"]
        assert await b.eval("document.getElementById('text').value") == ""


async def test_python_m_examples_chat_serves_until_ctrl_c() -> None:
    port = free_port()
    async with example_process("examples.chat", "--port", str(port), ready="chat on") as app:
        address = ("127.0.0.1", port)
        assert (await http(address, "GET", "/")).status == 200
        consumer = await http(address, "POST", "/api/rooms/lobby/consumer")
        stream = await SseClient(address).connect(consumer.json()["consumer_id"])
        await stream.opening()
        assert (
            await http(address, "POST", "/api/rooms/lobby/messages", {"name": "a", "text": "b"})
        ).status == 202
        assert (await stream.data_frame()).decoded == ["chat.lobby", '{"name": "a", "text": "b"}']
        await assert_clean_exit(app)
        assert (await stream.data_frame()).decoded == ["/unifrost/closed", "server shutting down"]
