"""The browser client stops on a refused stream instead of retrying forever, and
the client module can be imported from another origin."""

from __future__ import annotations

import asyncio

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from service.embed import StreamHandler, new_stream_handler
from service.web.base import ApiError
from tests.browser.harness import browser, page, page_server
from tests.support import running_server


@pytest.mark.parametrize(
    ("status", "code"), [(401, "unauthorized"), (403, "forbidden"), (400, "bad-request")]
)
async def test_a_refused_stream_is_reported_once_and_not_retried(status: int, code: str) -> None:
    """An app's stream behind its own checks (a login wall, say) says no."""
    relay = await new_stream_handler("memory://")
    requests: list[str] = []

    class Counted(StreamHandler):
        def prepare(self) -> None:
            super().prepare()
            requests.append(self.request.method)
            raise ApiError(status, code, "not for you")

    app = web.Application([relay.route("/events", Counted), relay.client_route()])
    server = HTTPServer(app)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    try:
        consumer_id = await relay.new_consumer()
        async with browser() as b:
            await b.open(f"{base}/page", page(consumer_id=consumer_id))
            await b.wait_log("error", "code", "refused")
            errors = await b.log("error")
            assert [e["code"] for e in errors] == ["refused"], errors
            assert str(status) in errors[0]["message"]
            await b.wait_log("state", "state", "closed")
            seen = len(requests)
            await asyncio.sleep(1.5)  # longer than the client's retry delay
            assert len(requests) == seen, "the client kept retrying a refused stream"
    finally:
        server.stop()
        await relay.close()


async def test_the_client_module_is_imported_from_another_origin() -> None:
    html: dict[str, str] = {}
    async with (
        page_server(html) as app_origin,
        browser() as b,
        running_server(retry=0.3, cors_origins=(app_origin,)) as running,
    ):
        consumer_id = await running.create_consumer(["news"])
        service = f"http://{running.public[0]}:{running.public[1]}"
        html["page"] = page(service, consumer_id=consumer_id, module=True)
        await b.goto(f"{app_origin}/")
        await b.wait_log("state", "state", "open")
        await running.publish("news", "imported cross-origin")
        await b.wait_messages(1)
        assert await b.messages() == [("news", "imported cross-origin", "1")]
