"""``python -m examples.ticker``: the price feed and the page, until Ctrl-C.

The page is on http://127.0.0.1:8000/ (``--port``); unifrost must be serving
``examples/ticker/unifrost.yaml`` (see README.md).
"""

import argparse
import asyncio
import contextlib

from examples.ticker.feed import arguments, run_feed
from examples.ticker.page import make_app

parser = arguments(argparse.ArgumentParser(prog="python -m examples.ticker"))
parser.add_argument("--port", type=int, default=8000, help="the page's port on 127.0.0.1")
parser.add_argument(
    "--unifrost", default="http://127.0.0.1:8080", help="unifrost's public listener"
)
parser.add_argument("--unifrost-admin", default="http://127.0.0.1:8081", help="its admin API")
args = parser.parse_args()


async def main() -> None:
    make_app(args.unifrost, args.unifrost_admin).listen(args.port, "127.0.0.1")
    print(f"ticker on http://127.0.0.1:{args.port}/", flush=True)
    await run_feed(args.kafka, args.interval)


with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(main())
