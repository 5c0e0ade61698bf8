"""The IoT example against a real Mosquitto (a private one on a free port, so
that nothing else publishing to ``sensors/...`` can interfere).

The devices publish to ``sensors/<site>/<device>/<metric>``, ``unifrost serve``
with the example's configuration subscribes to MQTT filters, and
``python -m examples.iot`` serves the dashboard and hands out consumers: frames
carry each reading's actual topic, the page switches filters through the public
``POST /subscriptions``, and the dashboard shows it all in Chromium.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from examples.iot.dashboard import FILTERS
from examples.iot.devices import DEVICES, UNITS, reading, sensor_topic
from tests.brokers.local_server import free_port
from tests.brokers.mosquitto_server import mosquitto_server
from tests.browser.harness import browser
from tests.examples.runner import ExampleProcess, assert_clean_exit, example_process
from tests.processes import LOOPBACK_PORTS, serving
from tests.support import Frame, SseClient, http

CONFIG = "examples/iot/unifrost.yaml"
TEMPERATURES = {sensor_topic(device, "temperature") for device in DEVICES}
EVERY_SENSOR = {sensor_topic(device, metric) for device in DEVICES for metric in UNITS}


@dataclass
class Dashboard:
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
async def dashboard() -> AsyncIterator[Dashboard]:
    """Mosquitto, unifrost serving the example's configuration, then the example."""
    async with mosquitto_server() as mosquitto:
        page = ("127.0.0.1", free_port())
        origin = f"http://127.0.0.1:{page[1]}"
        # The configuration's own ports and broker, moved to free ones.
        args = ["--config", CONFIG, "--broker", mosquitto.url, *LOOPBACK_PORTS]
        async with serving(args, UNIFROST_CORS_ORIGINS=origin) as unifrost:
            public, admin = await unifrost.started()
            options = {
                "--mqtt": f"127.0.0.1:{mosquitto.port}",
                "--interval": "0.05",
                "--port": str(page[1]),
                "--unifrost": f"http://127.0.0.1:{public}",
                "--unifrost-admin": f"http://127.0.0.1:{admin}",
            }
            flags = [part for pair in options.items() for part in pair]
            async with example_process("examples.iot", *flags, ready="dashboard on") as app:
                await app.wait_for_line("devices: publishing")
                yield Dashboard(app, page, ("127.0.0.1", public))


def check_reading(frame: Frame) -> tuple[str, int]:
    """A frame is the reading its actual topic names, as the device computes it."""
    _, site, device, metric = frame.topic.split("/")
    body = json.loads(frame.payload)
    assert body == reading(f"{site}/{device}", metric, body["seq"]), frame
    return frame.topic, body["seq"]


async def read_until(stream: SseClient, topics: set[str], count: int) -> dict[str, list[int]]:
    """Frames until each of ``topics`` came ``count`` times: the seqs seen per topic."""
    seen: dict[str, list[int]] = defaultdict(list)
    while not topics <= {topic for topic, seqs in seen.items() if len(seqs) >= count}:
        topic, seq = check_reading(await stream.data_frame(timeout=10))
        seen[topic].append(seq)
    return seen


async def test_wildcard_filters_deliver_actual_topics_and_pages_switch_them(
    dashboard: Dashboard,
) -> None:
    page = await http(dashboard.page, "GET", "/")
    assert page.status == 200
    assert f'<script src="{dashboard.unifrost}/unifrost.js"></script>' in page.text
    assert f'url: "{dashboard.unifrost}/events"' in page.text

    created = await http(dashboard.page, "POST", "/api/consumer")
    assert created.status == 200, created.text
    consumer_id = created.json()["consumer_id"]
    origin = {"Origin": dashboard.origin}
    stream = await SseClient(dashboard.public).connect(consumer_id, headers=origin)
    assert stream.headers["access-control-allow-origin"] == dashboard.origin
    _, info = await stream.opening()
    assert info.inner["subscriptions"] == ["sensors/+/+/temperature"]

    # sensors/+/+/temperature: every device's temperature, and nothing else.
    seen = await read_until(stream, TEMPERATURES, 3)
    assert set(seen) == TEMPERATURES
    for topic, seqs in seen.items():  # in order, nothing lost, each once
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (topic, seqs)

    # What the page does when the visitor picks sensors/#.
    change = {"consumer_id": consumer_id, "add": ["sensors/#"], "remove": [FILTERS[0]]}
    switched = await http(dashboard.public, "POST", "/subscriptions", change, headers=origin)
    assert switched.status == 200, switched.text
    assert switched.headers["access-control-allow-origin"] == dashboard.origin
    assert switched.json()["subscriptions"] == ["sensors/#"]
    seen = await read_until(stream, EVERY_SENSOR, 2)
    assert set(seen) == EVERY_SENSOR

    # Clients stay within what unifrost.yaml allows them.
    outside = {"consumer_id": consumer_id, "add": ["alarms/#"]}
    refused = await http(dashboard.public, "POST", "/subscriptions", outside)
    assert [error["code"] for error in refused.json()["errors"]] == ["forbidden"]
    stream.close()
    await assert_clean_exit(dashboard.app)


async def test_dashboard_in_chromium(dashboard: Dashboard) -> None:
    rows = "[...document.querySelectorAll('#readings tr')]"
    cells = f"{rows}.map((tr) => [...tr.children].map((td) => td.textContent))"
    async with browser() as b:
        await b.goto(f"{dashboard.origin}/")
        await b.wait("document.getElementById('state').textContent === 'open'")
        await b.wait(f"{rows}.length === {len(TEMPERATURES)}", timeout=10)
        assert {row[0] for row in await b.eval(cells)} == TEMPERATURES

        pick = (
            "(select) => { select.value = 'sensors/#'; select.dispatchEvent(new Event('change')); }"
        )
        await b.eval(f"({pick})(document.getElementById('filter'))")
        await b.wait("document.getElementById('subscriptions').textContent === 'sensors/#'")
        await b.wait(f"{rows}.length === {len(EVERY_SENSOR)}", timeout=10)
        shown = await b.eval(cells)
        assert {row[0] for row in shown} == EVERY_SENSOR
        for topic, value, seq in shown:  # read in one go: rows change with every reading
            _, site, device, metric = topic.split("/")
            expected = reading(f"{site}/{device}", metric, int(seq.removeprefix("#")))
            assert value == f"{expected['value']:.1f} {expected['unit']}", (topic, value, seq)
