"""The demo page (``--demo``) in Chromium: live stream, adding and removing topics,
and the curl command it shows, run as shown."""

from __future__ import annotations

import asyncio
import re

from tests.browser.harness import browser
from tests.support import running_server

DEMO_TOPICS = ["demo/clock", "demo/counter", "demo/quotes"]


def card_value(topic: str) -> str:
    return f"document.querySelector('[data-topic=\"{topic}\"]').textContent"


def toggle(topic: str) -> str:
    return f"document.querySelector('[data-toggle=\"{topic}\"]').click()"


async def test_demo_page_streams_and_lets_the_visitor_change_topics() -> None:
    async with running_server(demo=True, retry=0.3) as running, browser() as b:
        base = f"http://127.0.0.1:{running.public[1]}"
        await b.goto(f"{base}/")
        await b.wait("document.getElementById('state').textContent === 'open'")
        await b.wait("Number(document.getElementById('count').textContent) >= 3", timeout=4)
        for topic in DEMO_TOPICS:
            await b.wait(f"{card_value(topic)} !== ''")
        assert await b.eval(card_value("demo/weather")) == ""

        await b.eval(toggle("demo/weather"))
        await b.wait(f"{card_value('demo/weather')}.includes('°C')", timeout=4)
        await b.eval(toggle("demo/clock"))
        await b.wait("document.querySelector('[data-toggle=\"demo/clock\"]').textContent === 'add'")
        consumer_id = await b.eval("document.getElementById('consumer').textContent")
        consumer = running.manager.get(consumer_id)
        assert sorted(consumer.topics) == ["demo/counter", "demo/quotes", "demo/weather"]

        # The command on the page names the real admin port; run it as shown.
        command = await b.eval("document.getElementById('publish-command').textContent")
        assert f"http://127.0.0.1:{running.admin[1]}/publish?topic=demo/quotes" in command
        proc = await asyncio.create_subprocess_exec("bash", "-c", command + " --silent --fail")
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await b.wait(f"{card_value('demo/quotes')} === 'Hello from curl'", timeout=3)
        log = await b.eval("document.getElementById('log').textContent")
        assert re.search(r"#\d+ demo/quotes: Hello from curl", log), log
