"""The browser client (/unifrost.js) in a real Chromium against a real server."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from service.config import ClientSubscriptionSettings
from tests.browser.harness import CuttableProxy, browser, page, page_server
from tests.processes import LOOPBACK_PORTS, serving
from tests.support import Running, http, running_server, wait_for


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async def check() -> bool:
        return condition()

    await wait_for(check, timeout)


def origin(address: tuple[str, int]) -> str:
    return f"http://{address[0]}:{address[1]}"


def admin_app(running: Running, topics: list[str]) -> dict[str, object]:
    return {"admin": origin(running.admin), "topics": topics}


async def publish_all(running: Running, topic: str, payloads: list[str]) -> None:
    for payload in payloads:
        await running.publish(topic, payload)


async def test_page_receives_the_info_frame_and_messages() -> None:
    async with running_server(retry=0.3) as running, browser() as b:
        consumer_id = await running.create_consumer(["news", "chat"])
        base = origin(running.public)
        await b.open(f"{base}/page", page(consumer_id=consumer_id, topics=["news"]))
        await b.wait_log("state", "state", "open")
        info = await b.log("info")
        assert info == [
            {"kind": "info", "consumer": consumer_id, "subscriptions": ["chat", "news"]}
        ]

        await running.publish("news", "first")
        await running.publish("chat", "héllo ✓")
        await running.publish("news", '{"json": true}')
        await b.wait_messages(3)
        assert await b.messages() == [
            ("news", "first", "1"),
            ("chat", "héllo ✓", "2"),
            ("news", '{"json": true}', "3"),
        ]
        assert [(e["handler"], e["payload"]) for e in await b.log("topic")] == [
            ("news", "first"),
            ("news", '{"json": true}'),
        ]
        assert await b.log("error") == [] and await b.log("closed") == []
        assert [r["url"] for r in await b.requests()] == [f"{base}/events?id={consumer_id}"]


async def test_es_module_with_app_consumer_and_topic_event_names() -> None:
    async with running_server(retry=0.3, event_name="topic") as running, browser() as b:
        base = origin(running.public)
        html = page(app_consumer=True, module=True)
        await b.open(f"{base}/page", html, app=admin_app(running, ["alpha", "beta"]))
        await b.wait("window.log.some(e => e.kind === 'info')")
        consumer_id = (await b.log("info"))[0]["consumer"]
        assert running.manager.get(consumer_id) is not None

        await running.publish("beta", "b1")
        await running.publish("alpha", "a1")
        await b.wait_messages(2)
        assert await b.messages() == [("beta", "b1", "1"), ("alpha", "a1", "2")]


async def test_page_on_another_origin_connects_through_cors() -> None:
    subscriptions = ClientSubscriptionSettings(enabled=True, allow=("room/*",))
    html: dict[str, str] = {}
    async with (
        page_server(html) as app_origin,
        browser() as b,
        running_server(
            retry=0.3, cors_origins=(app_origin,), client_subscriptions=subscriptions
        ) as running,
    ):
        consumer_id = await running.create_consumer(["room/1"])
        html["page"] = page(origin(running.public), consumer_id=consumer_id)
        await b.goto(f"{app_origin}/")
        await b.wait_log("state", "state", "open")
        await running.publish("room/1", "over cors")
        await b.wait_messages(1)

        # The subscription helper goes cross-origin too (a JSON POST: preflighted).
        result = await b.eval("client.subscribe(['room/2', 'secret'])")
        assert result["subscriptions"] == ["room/1", "room/2"]
        assert [(e["topic"], e["code"]) for e in result["errors"]] == [("secret", "forbidden")]
        await running.publish("room/2", "second room")
        await b.wait_messages(2)
        assert await b.messages() == [
            ("room/1", "over cors", "1"),
            ("room/2", "second room", "2"),
        ]
        assert (await b.eval("location.origin")) == app_origin


async def test_network_cut_reconnects_with_last_event_id_and_loses_nothing() -> None:
    async with running_server(retry=0.2, heartbeat=0.2) as running, browser() as b:
        proxy = CuttableProxy(running.public)
        await proxy.start()
        try:
            consumer_id = await running.create_consumer(["feed"])
            via_proxy = f"http://127.0.0.1:{proxy.port}"
            await b.open(f"{via_proxy}/page", page(consumer_id=consumer_id))
            await publish_all(running, "feed", ["m1", "m2", "m3"])
            await b.wait_messages(3)

            proxy.cut()
            await until(lambda: not running.manager.get(consumer_id).stream is not None, timeout=5)
            await publish_all(running, "feed", ["m4", "m5", "m6"])
            # The browser keeps trying on its own while the network is down.
            await until(lambda: proxy.refused >= 2, timeout=5)
            proxy.restore()
            await b.wait_messages(6)
            await publish_all(running, "feed", ["m7"])
            await b.wait_messages(7)
            await asyncio.sleep(0.3)  # a duplicate would show up by now

            assert await b.messages() == [("feed", f"m{n}", str(n)) for n in range(1, 8)]
            resumed = [h for h in proxy.heads if h.startswith("GET /events")][-1]
            assert "\r\nLast-Event-ID: 3" in resumed, resumed
            assert (await b.eval("client.state")) == "open"
        finally:
            await proxy.close()


async def test_page_reload_resumes_without_loss() -> None:
    async with running_server(retry=0.3) as running, browser() as b:
        base = origin(running.public)
        await b.open(f"{base}/page", page(app_consumer=True), app=admin_app(running, ["feed"]))
        await b.wait("window.log.some(e => e.kind === 'info')")
        consumer_id = (await b.log("info"))[0]["consumer"]
        await publish_all(running, "feed", ["m1", "m2"])
        await b.wait_messages(2)

        await b.reload()  # the same consumer, resumed after id 2
        await b.wait_log("info", "consumer", consumer_id)
        await publish_all(running, "feed", ["m3"])
        await b.wait_messages(1)
        assert await b.messages() == [("feed", "m3", "3")]

        await b.goto("about:blank")  # away while messages keep coming
        await until(lambda: not running.manager.get(consumer_id).stream is not None, timeout=5)
        await publish_all(running, "feed", ["m4", "m5"])
        await b.goto(f"{base}/page")
        await b.wait_messages(2)
        await asyncio.sleep(0.2)
        assert await b.messages() == [("feed", "m4", "4"), ("feed", "m5", "5")]
        urls = [r["url"] for r in await b.requests()]
        assert urls == [
            f"{base}/events?id={consumer_id}",
            f"{base}/events?id={consumer_id}&last_event_id=2",
            f"{base}/events?id={consumer_id}&last_event_id=3",
        ]


async def test_twenty_topics_share_one_connection() -> None:
    topics = [f"topic/{n:02d}" for n in range(20)]
    async with running_server(retry=0.3, event_name="topic") as running, browser() as b:
        consumer_id = await running.create_consumer(topics)
        base = origin(running.public)
        await b.open(f"{base}/page", page(consumer_id=consumer_id, topics=topics))
        await b.wait_log("state", "state", "open")
        for round_ in range(2):
            for topic in topics:
                await running.publish(topic, f"{topic}#{round_}")
        await b.wait_messages(40)

        messages = await b.messages()
        assert [m[2] for m in messages] == [str(n) for n in range(1, 41)]
        assert [m[1] for m in messages] == [f"{t}#{r}" for r in range(2) for t in topics]
        per_topic = await b.log("topic")
        for topic in topics:
            mine = [e["payload"] for e in per_topic if e["handler"] == topic]
            assert mine == [f"{topic}#0", f"{topic}#1"], topic
        assert len(await b.requests()) == 1
        assert running.metrics.connections_opened.value == 1


async def test_consumer_deleted_server_side_stops_the_client() -> None:
    async with running_server(retry=0.1) as running, browser() as b:
        consumer_id = await running.create_consumer(["feed"])
        base = origin(running.public)
        await b.open(f"{base}/page", page(consumer_id=consumer_id))
        await b.wait_log("state", "state", "open")
        await running.publish("feed", "last words")
        await b.wait_messages(1)

        response = await running.api("DELETE", f"/consumers/{consumer_id}")
        assert response.status == 204
        await b.wait_log("closed", "reason", "consumer closed")
        await b.wait("client.state === 'closed'")
        await asyncio.sleep(0.6)  # six retry intervals: no reconnect attempt
        assert len(await b.requests()) == 1
        assert (await b.log("state"))[-1] == {"kind": "state", "state": "closed"}
        assert await b.log("error") == []


async def test_server_shutdown_then_restart_on_the_same_ports() -> None:
    env = {"UNIFROST_RETRY": "300ms", "UNIFROST_DRAIN_TIMEOUT": "2s"}
    async with serving(LOOPBACK_PORTS, **env) as first, browser() as b:
        public_port, admin_port = await first.started()
        public, admin = ("127.0.0.1", public_port), ("127.0.0.1", admin_port)
        app = {"admin": origin(admin), "topics": ["feed"]}
        await b.open(f"{origin(public)}/page", page(app_consumer=True), app=app)
        await b.wait("window.log.some(e => e.kind === 'info')")
        old_consumer = (await b.log("info"))[0]["consumer"]
        assert (await http(admin, "POST", "/publish?topic=feed", "before")).status == 202
        await b.wait_messages(1)

        first.proc.send_signal(signal.SIGTERM)
        await b.wait_log("closed", "reason", "server shutting down")
        assert await first.finish() == 0

        # The new process has none of the old consumers: the page's app function
        # is asked for a new one once the server answers 404.
        args = ["--listen", f"127.0.0.1:{public_port}", "--admin-listen", f"127.0.0.1:{admin_port}"]
        async with serving(args, **env) as second:
            await second.started()
            await b.wait("window.log.filter(e => e.kind === 'info').length === 2")
            infos = await b.log("info")
            new_consumer = infos[1]["consumer"]
            assert new_consumer != old_consumer and infos[1]["subscriptions"] == ["feed"]
            assert [e["code"] for e in await b.log("error")] == ["consumer-expired"]
            assert (await http(admin, "POST", "/publish?topic=feed", "after")).status == 202
            await b.wait_messages(2)
            assert await b.messages() == [("feed", "before", "1"), ("feed", "after", "1")]
            assert await b.eval("client.state") == "open"
            urls = [r["url"] for r in await b.requests()]
            events = f"{origin(public)}/events"
            # The browser's own reconnects, then the client's probe that found the
            # 404, then the stream of the new consumer.
            assert urls[0] == f"{events}?id={old_consumer}"
            assert set(urls[1:-2]) == {f"{events}?id={old_consumer}"}
            assert urls[-2:] == [
                f"{events}?id={old_consumer}&last_event_id=1",
                f"{events}?id={new_consumer}",
            ]
