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


async def test_client_module_and_type_declarations_are_served(server: Running) -> None:
    module = await server.public_api("GET", "/unifrost.mjs")
    assert module.status == 200
    assert module.headers["content-type"].startswith("application/javascript")
    assert module.text.rstrip().endswith("export default UnifrostClient;")
    assert "export { UnifrostClient };" in module.text
    types = await server.public_api("GET", "/unifrost.d.ts")
    assert types.status == 200
    assert "export declare class UnifrostClient" in types.text


async def test_demo_mode_lets_visitors_change_demo_topics_only() -> None:
    async with running_server(demo=True) as running:
        consumer_id = page_consumer_id((await running.public_api("GET", "/")).text)
        body = {
            "consumer_id": consumer_id,
            "add": ["demo/weather", "orders"],
            "remove": ["demo/clock"],
        }
        response = await running.public_api("POST", "/subscriptions", body)
        assert response.status == 200, response.text
        assert response.json()["subscriptions"] == ["demo/counter", "demo/quotes", "demo/weather"]
        assert [(e["topic"], e["code"]) for e in response.json()["errors"]] == [
            ("orders", "forbidden")
        ]


async def test_client_subscriptions_stay_off_without_demo_mode(server: Running) -> None:
    consumer_id = await server.create_consumer(["demo/clock"])
    body = {"consumer_id": consumer_id, "add": ["demo/weather"]}
    assert (await server.public_api("POST", "/subscriptions", body)).status == 404


async def test_demo_backend_route_creates_a_consumer() -> None:
    async with running_server(demo=True) as running:
        response = await running.public_api("POST", "/demo/consumers")
        assert response.status == 201
        consumer = running.manager.get(response.json()["consumer_id"])
        assert sorted(consumer.topics) == ["demo/clock", "demo/counter", "demo/quotes"]


async def test_demo_page_shows_the_publish_command_with_the_admin_port() -> None:
    async with running_server(demo=True) as running:
        page = (await running.public_api("GET", "/")).text
        admin_port = running.admin[1]
        expected = (
            f"curl -X POST &#x27;http://127.0.0.1:{admin_port}/publish?topic=demo/quotes&#x27;"
            " -d &#x27;Hello from curl&#x27;"
        )
        assert f'<pre id="publish-command">{expected}</pre>' in page
        assert (
            '["demo/clock", "demo/counter", "demo/quotes", "demo/weather", "demo/stocks"]' in page
        )


async def test_demo_page_names_the_token_without_revealing_it() -> None:
    async with running_server(demo=True, admin_token="s3cret-token") as running:
        page = (await running.public_api("GET", "/")).text
        assert "Authorization: Bearer $UNIFROST_ADMIN_TOKEN" in page
        assert "s3cret-token" not in page


async def test_demo_publisher_feeds_the_extra_topics() -> None:
    async with running_server(demo=True) as running:
        consumer_id = await running.create_consumer(["demo/weather", "demo/stocks"])
        client = await running.stream(consumer_id)
        await client.opening()
        seen = {(await client.data_frame(timeout=3.0)).topic for _ in range(2)}
        assert seen == {"demo/weather", "demo/stocks"}
        client.close()
