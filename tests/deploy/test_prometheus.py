"""The alert rules load in promtool, and a real Prometheus scrapes a real server."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from service import __version__
from tests.brokers.local_server import free_port
from tests.processes import LOOPBACK_PORTS, serving

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
TOKEN = "scrape-token-7f3a"
DEADLINE = 20.0


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found is not None, f"{name} is missing: run scripts/ensure-prometheus.sh"
    return found


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout
    names = [r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert names == [
        "UnifrostBrokerDown",
        "UnifrostSlowConsumerDisconnectsRising",
        "UnifrostDeliveryLatencyHigh",
        "UnifrostConsumersNearLimit",
        "UnifrostNoDeliveries",
    ]


async def test_prometheus_scrapes_the_admin_listener_with_the_token(tmp_path: Path) -> None:
    prometheus = tool("prometheus")
    async with serving([*LOOPBACK_PORTS, "--admin-token", TOKEN]) as server:
        _, admin_port = await server.started()
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "unifrost",
                    "metrics_path": "/metrics",
                    "authorization": {"credentials_file": str(token_file)},
                    "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"]}],
                }
            ],
        }
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            prometheus,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            query = urllib.parse.urlencode({"query": "unifrost_build_info"})
            url = f"http://127.0.0.1:{port}/api/v1/query?{query}"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE
            result: list[Any] = []
            while not result:
                assert proc.returncode is None, (tmp_path / "prometheus.log").read_text()
                assert loop.time() < deadline, "no unifrost_build_info series within 20s"
                try:
                    body = await asyncio.to_thread(get_json, url)
                    result = body["data"]["result"]
                except OSError:
                    pass
                if not result:
                    await asyncio.sleep(0.25)
            assert len(result) == 1
            labels = result[0]["metric"]
            assert labels["__name__"] == "unifrost_build_info"
            assert labels["job"] == "unifrost"
            assert labels["instance"] == f"127.0.0.1:{admin_port}"
            assert labels["version"] == __version__
            assert result[0]["value"][1] == "1"

            rules = await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/api/v1/rules")
            loaded = [r["name"] for g in rules["data"]["groups"] for r in g["rules"]]
            assert len(loaded) == 5
            assert loaded[0] == "UnifrostBrokerDown"
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.close()
