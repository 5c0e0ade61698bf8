"""``python -m examples.embedded [--port 8000]``: the app on 127.0.0.1:8000 until Ctrl-C."""

import argparse
import asyncio
import contextlib

from examples.embedded.app import main

parser = argparse.ArgumentParser(prog="python -m examples.embedded")
parser.add_argument("--port", type=int, default=8000, help="the app's port on 127.0.0.1")
args = parser.parse_args()
with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(main(args.port))
