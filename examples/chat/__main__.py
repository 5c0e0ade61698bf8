"""``python -m examples.chat [--port 8000]``: the chat on http://127.0.0.1:8000/ until Ctrl-C."""

import argparse
import asyncio
import contextlib

from examples.chat.app import main

parser = argparse.ArgumentParser(prog="python -m examples.chat")
parser.add_argument("--port", type=int, default=8000, help="the app's port on 127.0.0.1")
args = parser.parse_args()
with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(main(args.port))
