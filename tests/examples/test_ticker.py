"""The ticker example against a real Kafka-compatible broker (tansu).

The feed publishes to Kafka, ``unifrost serve`` with the example's configuration
reads it, and ``python -m examples.ticker`` serves the page and hands out
consumers: ticks arrive over SSE in order, on their symbol's topic, to the page's
origin (CORS); the page shows them in Chromium.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import pytest

from examples.ticker.feed import SYMBOLS, tick, topic_of
from tests.brokers.kafka_server import running_tansu
from tests.brokers.local_server import free_port
from tests.browser.harness import browser
from tests.examples.runner import ExampleProcess, assert_clean_exit, example_process
from tests.processes import LOOPBACK_PORTS, serving
from tests.support import Frame, SseClient, http

CONFIG = "examples/ticker/unifrost.yaml"


@dataclass
class Ticker:
    app: ExampleProcess
    page: tuple[str, int]
    public: tuple[str, int]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.page[1]}"

    @property
    def unifrost(self) -> str:
        return f"http://127.0.0.1:{self.public[1]}"


@pytest.fixture
async def ticker() -> AsyncIterator[Ticker]:
    """tansu, unifrost serving the example's configuration, then the example."""
    with running_tansu() as kafka:
        page = ("127.0.0.1", free_port())
        origin = f"http://127.0.0.1:{page[1]}"
        # The configuration's own ports and broker, moved to free ones.
        args = ["--config", CONFIG, "--broker", kafka.url, *LOOPBACK_PORTS]
        async with serving(args, UNIFROST_CORS_ORIGINS=origin) as unifrost:
            public, admin = await unifrost.started()
            options = {
                "--kafka": kafka.address,
                "--interval": "0.05",
                "--port": str(page[1]),
                "--unifrost": f"http://127.0.0.1:{public}",
                "--unifrost-admin": f"http://127.0.0.1:{admin}",
            }
            flags = [part for pair in options.items() for part in pair]
            async with example_process("examples.ticker", *flags, ready="ticker on") as app:
                await app.wait_for_line("feed: publishing")
                yield Ticker(app, page, ("127.0.0.1", public))


def check_tick(frame: Frame) -> tuple[str, int]:
    """A frame is a tick of the symbol its topic names, as the feed computes it."""
    body = json.loads(frame.payload)
    symbol, seq = body["symbol"], body["seq"]
    assert frame.topic == topic_of(symbol), frame
    assert datetime.fromisoformat(body.pop("time")).tzinfo is not None
    assert body == tick(symbol, seq), frame
    return symbol, seq


async def test_ticks_flow_from_kafka_to_the_pages_origin_in_order(ticker: Ticker) -> None:
    page = await http(ticker.page, "GET", "/")
    assert page.status == 200
    assert f'<script src="{ticker.unifrost}/unifrost.js"></script>' in page.text
    assert f'url: "{ticker.unifrost}/events"' in page.text

    created = await http(ticker.page, "POST", "/api/consumer")
    assert created.status == 200, created.text
    stream = await SseClient(ticker.public).connect(
        created.json()["consumer_id"], headers={"Origin": ticker.origin}
    )
    assert stream.status == 200
    assert stream.headers["access-control-allow-origin"] == ticker.origin
    _, info = await stream.opening()
    assert info.inner["subscriptions"] == sorted(map(topic_of, SYMBOLS))

    seqs: dict[str, list[int]] = defaultdict(list)
    event_id = 0
    while len(seqs) < len(SYMBOLS) or min(map(len, seqs.values())) < 3:
        frame = await stream.data_frame(timeout=10)
        event_id += 1
        assert frame.id == str(event_id), frame
        symbol, seq = check_tick(frame)
        seqs[symbol].append(seq)
    for symbol, seen in seqs.items():  # nothing lost or reordered within a symbol
        assert seen == list(range(seen[0], seen[0] + len(seen))), (symbol, seen)
    stream.close()
    await assert_clean_exit(ticker.app)


async def test_ticker_page_in_chromium(ticker: Ticker) -> None:
    async with browser() as b:
        await b.goto(f"{ticker.origin}/")
        await b.wait("document.getElementById('state').textContent === 'open'")
        for symbol in SYMBOLS:
            row = f"document.querySelector('tr[data-symbol=\"{symbol}\"]')"
            await b.wait(f"{row}.querySelector('.seq').textContent !== ''", timeout=10)
            cells = f"[...{row}.querySelectorAll('.seq, .price')].map((cell) => cell.textContent)"
            price, seq_text = await b.eval(cells)
            # The row changes with every tick: read seq and price in one go, then check.
            seq = int(seq_text.removeprefix("#"))
            assert price == f"{tick(symbol, seq)['price']:.2f}", (symbol, seq, price)
