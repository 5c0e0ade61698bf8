"""The price feed: publishes a tick per symbol to Kafka, ``ticks.<SYMBOL>``, each interval.

It stands for any system that writes to Kafka and knows nothing of unifrost or
browsers. A tick is JSON: ``{"symbol", "seq", "price", "time"}``. Prices follow
a smooth, repeatable walk around each symbol's opening price, so the ``seq``-th
tick of a symbol is always the same (``tick(symbol, seq)``) apart from its time.

Run alone with ``python -m examples.ticker.feed [--kafka HOST:PORT] [--interval SECONDS]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

#: Symbols and their opening prices (made-up companies).
SYMBOLS = {"ACME": 120.00, "GLOBEX": 48.50, "INITECH": 12.25, "UMBRELLA": 310.00}


def topic_of(symbol: str) -> str:
    return f"ticks.{symbol}"


def tick(symbol: str, seq: int) -> dict[str, Any]:
    """The ``seq``-th tick of ``symbol``, without its time."""
    opening = SYMBOLS[symbol]
    phase = sum(map(ord, symbol))  # so that the symbols do not move in step
    wave = 0.03 * math.sin((seq + phase) / 7) + 0.01 * math.sin((3 * seq + phase) / 5)
    return {"symbol": symbol, "seq": seq, "price": round(opening * (1 + wave), 2)}


async def run_feed(kafka: str, interval: float) -> None:
    """Publish one round of ticks every ``interval`` seconds until cancelled."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await producer.start()
    print(f"feed: publishing {', '.join(map(topic_of, SYMBOLS))} to {kafka}", flush=True)
    try:
        seq = 0
        while True:
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            for symbol in SYMBOLS:
                body = json.dumps({**tick(symbol, seq), "time": now}).encode()
                await producer.send_and_wait(topic_of(symbol), body, key=symbol.encode())
            seq += 1
            await asyncio.sleep(interval)
    finally:
        await producer.stop()


def arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--kafka", default="127.0.0.1:9092", help="bootstrap servers")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between rounds")
    return parser


if __name__ == "__main__":
    args = arguments(argparse.ArgumentParser(prog="python -m examples.ticker.feed")).parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_feed(args.kafka, args.interval))
