"""The embedded example app, and the embedding API it is built on, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from examples.embedded.app import make_app
from service.brokers.base import BrokerError
from service.embed import ConsumerNotFound, Relay, consumer_ttl, new_stream_handler
from tests.brokers.local_server import free_port
from tests.examples.runner import assert_clean_exit, example_process
from tests.support import SseClient, http


@dataclass
class ExampleApp:
    """The example app at ``address``, spoken to over HTTP as its README does."""

    address: tuple[str, int]

    async def login(self, user: str) -> str:
        response = await http(self.address, "POST", f"/login?user={user}", b"")
        assert response.status == 200
        return response.headers["set-cookie"].split(";")[0]

    async def my_consumer(self, cookie: str) -> str:
        response = await http(self.address, "POST", "/my/consumer", b"", headers={"Cookie": cookie})
        assert response.status == 200, response.text
        return str(response.json()["consumer_id"])

    async def stream(self, consumer_id: str, cookie: str | None) -> SseClient:
        headers = {"Cookie": cookie} if cookie else {}
        return await SseClient(self.address).connect(consumer_id, headers=headers)


@dataclass
class InProcessApp(ExampleApp):
    """The example app served by the test's own event loop, with its relay."""

    relay: Relay


@pytest.fixture
async def example() -> AsyncIterator[InProcessApp]:
    relay = await new_stream_handler("memory://", consumer_ttl(5))
    server = HTTPServer(make_app(relay, cookie_secret="test-secret"))
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    try:
        yield InProcessApp(("127.0.0.1", sockets[0].getsockname()[1]), relay)
    finally:
        server.stop()
        await relay.close()


async def test_owner_streams_own_notifications(example: InProcessApp) -> None:
    cookie = await example.login("alice")
    consumer_id = await example.my_consumer(cookie)
    client = await example.stream(consumer_id, cookie)
    assert client.status == 200
    _, info = await client.opening()
    assert info.inner["subscriptions"] == ["announcements", "user.alice"]
    response = await http(example.address, "POST", "/notify?user=alice", b"hi alice")
    assert response.status == 202
    frame = await client.data_frame()
    assert (frame.id, frame.decoded) == ("1", ["user.alice", "hi alice"])
    client.close()


async def test_stream_refuses_anonymous_and_other_users(example: InProcessApp) -> None:
    alice = await example.login("alice")
    bob = await example.login("bob")
    consumer_id = await example.my_consumer(alice)
    anonymous = await example.stream(consumer_id, None)
    assert anonymous.status == 401
    assert anonymous.error_json()["error"]["code"] == "unauthorized"
    intruder = await example.stream(consumer_id, bob)
    assert intruder.status == 403
    assert intruder.error_json()["error"]["code"] == "forbidden"


async def test_relay_mirrors_go_api(example: InProcessApp) -> None:
    relay = example.relay
    consumer_id = await relay.new_custom_consumer("tab-1")
    assert consumer_id == "tab-1"
    with pytest.raises(ValueError):
        await relay.new_custom_consumer("not ok/")
    await relay.subscribe("tab-1", "prices")
    await relay.subscribe("tab-1", "news")
    await relay.unsubscribe("tab-1", "news")
    assert relay.subscriptions("tab-1") == ["prices"]
    with pytest.raises(ConsumerNotFound):
        await relay.subscribe("nobody", "prices")
    relay.ctx.broker.rejected_topics.add("refused")
    with pytest.raises(BrokerError):
        await relay.subscribe("tab-1", "refused")

    generated = await relay.new_consumer()
    assert len(generated) >= 22 and generated != consumer_id


async def test_close_consumer_ends_its_stream(example: InProcessApp) -> None:
    cookie = await example.login("carol")
    consumer_id = await example.my_consumer(cookie)
    client = await example.stream(consumer_id, cookie)
    await client.opening()
    await example.relay.close_consumer(consumer_id)
    closed = await client.data_frame()
    assert closed.decoded == ["/unifrost/closed", "consumer closed"]
    assert await client.at_eof()
    with pytest.raises(ConsumerNotFound):
        await example.relay.close_consumer(consumer_id)


async def test_relay_close_says_goodbye() -> None:
    relay = await new_stream_handler("memory://")
    server = HTTPServer(make_app(relay, cookie_secret="s"))
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    app = InProcessApp(("127.0.0.1", sockets[0].getsockname()[1]), relay)
    cookie = await app.login("dave")
    client = await app.stream(await app.my_consumer(cookie), cookie)
    await client.opening()
    await relay.close()
    retry = await client.frame()
    assert retry.retry is not None and 3000 <= retry.retry <= 6000
    closed = await client.data_frame()
    assert closed.decoded == ["/unifrost/closed", "server shutting down"]
    assert await client.at_eof()
    server.stop()


async def test_python_m_examples_embedded_runs_the_readme_steps() -> None:
    port = free_port()
    ready = "embedded example listening"
    async with example_process("examples.embedded", "--port", str(port), ready=ready) as process:
        app = ExampleApp(("127.0.0.1", port))
        cookie = await app.login("alice")
        consumer_id = await app.my_consumer(cookie)
        client = await app.stream(consumer_id, cookie)
        await client.opening()
        response = await http(app.address, "POST", "/notify?user=alice", b"hello alice")
        assert response.status == 202
        frame = await client.data_frame()
        assert (frame.id, frame.decoded) == ("1", ["user.alice", "hello alice"])
        assert (await app.stream(consumer_id, None)).status == 401
        await assert_clean_exit(process)
        assert (await client.data_frame()).decoded == ["/unifrost/closed", "server shutting down"]
