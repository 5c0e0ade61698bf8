"""Simulated devices: each publishes its readings to MQTT, ``sensors/<site>/<device>/<metric>``.

They stand for real sensors on a plant floor, talking to Mosquitto and knowing
nothing of unifrost. A reading is JSON: ``{"value": 71.4, "unit": "°C", "seq": 7}``.
Values follow a smooth, repeatable curve, so the ``seq``-th reading of a sensor
is always the same: ``reading(device, metric, seq)``.

Run alone with ``python -m examples.iot.devices [--mqtt HOST:PORT] [--interval SECONDS]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
from typing import Any

import aiomqtt

#: ``<site>/<device>`` and each metric's usual value.
DEVICES = {
    "north/boiler-1": {"temperature": 71.0, "humidity": 35.0},
    "north/boiler-2": {"temperature": 68.5, "humidity": 38.0},
    "south/freezer-1": {"temperature": -18.0, "humidity": 62.0},
}
UNITS = {"temperature": "°C", "humidity": "%"}


def sensor_topic(device: str, metric: str) -> str:
    return f"sensors/{device}/{metric}"


def reading(device: str, metric: str, seq: int) -> dict[str, Any]:
    phase = sum(map(ord, device + metric))  # so that the sensors do not move in step
    value = DEVICES[device][metric] + 1.5 * math.sin((seq + phase) / 6)
    return {"value": round(value, 1), "unit": UNITS[metric], "seq": seq}


async def run_devices(mqtt: str, interval: float) -> None:
    """Every device publishes each of its readings every ``interval`` seconds until cancelled."""
    host, _, port = mqtt.rpartition(":")
    async with aiomqtt.Client(host, int(port)) as client:
        print(f"devices: publishing {len(DEVICES)} devices to mqtt://{mqtt}", flush=True)
        seq = 0
        while True:
            for device, metrics in DEVICES.items():
                for metric in metrics:
                    body = json.dumps(reading(device, metric, seq), ensure_ascii=False)
                    await client.publish(sensor_topic(device, metric), body, qos=1)
            seq += 1
            await asyncio.sleep(interval)


def arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--mqtt", default="127.0.0.1:1883", help="the MQTT broker, HOST:PORT")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    return parser


if __name__ == "__main__":
    args = arguments(argparse.ArgumentParser(prog="python -m examples.iot.devices")).parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_devices(args.mqtt, args.interval))
