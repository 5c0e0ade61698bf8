"""Demo mode (what `make run` serves) and the browser client script."""

from __future__ import annotations

import re

from tests.support import Running, running_server


def page_consumer_id(html: str) -> str:
    match = re.search(r'var consumerId = "([A-Za-z0-9_-]+)";', html)
    assert match, html
    return match.group(1)


async def test_demo_page_streams_live_demo_topics() -> None:
    async with running_server(demo=True) as running:
        page = await running.public_api("GET", "/")
        assert page.status == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script src="/unifrost.js"></script>' in page.text
        consumer_id = page_consumer_id(page.text)

        client = await running.stream(consumer_id)
        _, info = await client.opening()
        assert info.inner["subscriptions"] == ["demo/clock", "demo/counter", "demo/quotes"]
        seen: set[str] = set()
        ids: list[int] = []
        while seen != {"demo/clock", "demo/counter", "demo/quotes"}:
            frame = await client.data_frame(timeout=3.0)  # the publisher ticks every second
            seen.add(frame.topic)
            ids.append(int(frame.id or 0))
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        client.close()


async def test_each_page_view_gets_its_own_consumer() -> None:
    async with running_server(demo=True) as running:
        first = page_consumer_id((await running.public_api("GET", "/")).text)
        second = page_consumer_id((await running.public_api("GET", "/")).text)
        assert first != second
        assert running.manager.get(first) is not None


async def test_demo_page_is_absent_without_demo_mode(server: Running) -> None:
    response = await server.public_api("GET", "/")
    assert response.status == 404
    assert response.json()["error"]["code"] == "not-found"


async def test_client_script_is_served(server: Running) -> None:
    script = await server.public_api("GET", "/unifrost.js")
    assert script.status == 200
    assert script.headers["content-type"].startswith("application/javascript")
    assert "UnifrostClient" in script.text and "Last-Event-ID" in script.text
    head = await server.public_api("HEAD", "/unifrost.js")
    assert head.status == 200 and head.body == b""
