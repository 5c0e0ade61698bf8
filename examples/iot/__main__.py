"""``python -m examples.iot``: the simulated devices and the dashboard, until Ctrl-C.

The dashboard is on http://127.0.0.1:8000/ (``--port``); unifrost must be serving
``examples/iot/unifrost.yaml`` (see README.md).
"""

import argparse
import asyncio
import contextlib

from examples.iot.dashboard import make_app
from examples.iot.devices import arguments, run_devices

parser = arguments(argparse.ArgumentParser(prog="python -m examples.iot"))
parser.add_argument("--port", type=int, default=8000, help="the dashboard's port on 127.0.0.1")
parser.add_argument(
    "--unifrost", default="http://127.0.0.1:8080", help="unifrost's public listener"
)
parser.add_argument("--unifrost-admin", default="http://127.0.0.1:8081", help="its admin API")
args = parser.parse_args()


async def main() -> None:
    make_app(args.unifrost, args.unifrost_admin).listen(args.port, "127.0.0.1")
    print(f"dashboard on http://127.0.0.1:{args.port}/", flush=True)
    await run_devices(args.mqtt, args.interval)


with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(main())
