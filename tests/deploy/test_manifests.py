"""The shipped deployment files parse and agree with the service they deploy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.config import load_settings
from tests.processes import clean_env
from tests.support import running_server

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
METRIC = re.compile(r"unifrost_[a-z_]+")


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def one(path: Path) -> dict[str, Any]:
    docs = load_all(path)
    assert len(docs) == 1, path
    doc: dict[str, Any] = docs[0]
    return doc


def container() -> dict[str, Any]:
    containers = one(K8S / "deployment.yaml")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def configmap_config(tmp_path: Path) -> Path:
    data = one(K8S / "configmap.yaml")["data"]
    assert list(data) == ["unifrost.yaml"]
    path = tmp_path / "unifrost.yaml"
    path.write_text(data["unifrost.yaml"])
    return path


def check_config(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", "--check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=15,
        cwd=REPO,
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
    )


def test_every_manifest_parses() -> None:
    files = sorted([*K8S.glob("*.yaml"), *(DEPLOY / "prometheus").glob("*.yml")])
    assert [f.name for f in files] == [
        "configmap.yaml",
        "deployment.yaml",
        "pdb.yaml",
        "service.yaml",
        "servicemonitor.yaml",
        "alerts.yml",
        "scrape.yml",
    ]
    kinds = {f.name: [d.get("kind") for d in load_all(f)] for f in files}
    assert kinds["deployment.yaml"] == ["Deployment"]
    assert kinds["service.yaml"] == ["Service"]
    assert kinds["pdb.yaml"] == ["PodDisruptionBudget"]
    assert kinds["servicemonitor.yaml"] == ["ServiceMonitor"]
    assert kinds["configmap.yaml"] == ["ConfigMap"]
    assert one(K8S / "servicemonitor.yaml")["apiVersion"] == "monitoring.coreos.com/v1"
    scrape = one(DEPLOY / "prometheus" / "scrape.yml")["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["authorization"]["credentials_file"].startswith("/")


async def test_probe_paths_and_ports_match_the_public_routes(tmp_path: Path) -> None:
    spec = container()
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    settings = load_settings(str(configmap_config(tmp_path)), env={"UNIFROST_ADMIN_TOKEN": "t"})
    assert ports == {"http": settings.listen.port, "admin": settings.admin_listen.port}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service_ports = one(K8S / "service.yaml")["spec"]["ports"]
    assert {p["targetPort"] for p in service_ports} == set(ports)
    monitor = one(K8S / "servicemonitor.yaml")["spec"]["endpoints"][0]
    assert monitor["port"] == "admin"
    assert monitor["path"] == "/metrics"
    token_ref = spec["env"][0]["valueFrom"]["secretKeyRef"]
    assert spec["env"][0]["name"] == "UNIFROST_ADMIN_TOKEN"
    assert monitor["authorization"]["credentials"] == token_ref

    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    health = re.search(r"HEALTHCHECK.*'http://127\.0\.0\.1:(\d+)(/[a-z]+)'", dockerfile, re.S)
    assert health is not None
    assert int(health.group(1)) == 8080
    assert re.search(r"^EXPOSE 8080 8081$", dockerfile, re.M)
    assert "USER unifrost" in dockerfile
    assert "UNIFROST_ADMIN_TOKEN" in dockerfile

    async with running_server() as srv:
        for path in ("/readyz", "/healthz", health.group(2)):
            response = await srv.public_api("GET", path)
            assert (path, response.status) == (path, 200)
        assert (await srv.public_api("GET", "/metrics")).status == 404


def test_configmap_config_passes_check_config(tmp_path: Path) -> None:
    result = check_config(configmap_config(tmp_path), UNIFROST_ADMIN_TOKEN="s3cret")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "unifrost: configuration OK\n",
        "",
    )


def test_broken_config_fails_check_config(tmp_path: Path) -> None:
    path = configmap_config(tmp_path)
    broken = path.read_text().replace("heartbeat: 15s", "heartbeat: soon")
    broken = broken.replace("nats://", "carrier-pigeon://")
    path.write_text(broken)
    result = check_config(path, UNIFROST_ADMIN_TOKEN="s3cret")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("unifrost: config: ") for line in lines)
    assert any("heartbeat" in line for line in lines), lines
    # Without the token the non-loopback admin listener is refused.
    path.write_text(path.read_text().replace("heartbeat: soon", "heartbeat: 15s"))
    path.write_text(path.read_text().replace("carrier-pigeon://", "nats://"))
    result = check_config(path)
    assert result.returncode == 2
    assert "admin_listen" in result.stderr
    assert "admin_token" in result.stderr


def test_grace_periods_exceed_drain_timeout(tmp_path: Path) -> None:
    drain = load_settings(
        str(configmap_config(tmp_path)), env={"UNIFROST_ADMIN_TOKEN": "t"}
    ).drain_timeout
    assert drain == 10.0
    pod = one(K8S / "deployment.yaml")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > drain

    unit = (DEPLOY / "systemd" / "unifrost.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if re.match(r"^[A-Za-z]+=", line)
    )
    stop = re.fullmatch(r"(\d+)s", settings["TimeoutStopSec"])
    assert stop is not None
    example_drain = load_settings(str(DEPLOY / "unifrost.yaml"), env={}).drain_timeout
    assert int(stop.group(1)) > example_drain
    assert settings["LimitNOFILE"] == "1048576"
    assert settings["Restart"] == "on-failure"
    assert settings["KillSignal"] == "SIGTERM"
    assert settings["User"] == "unifrost"
    assert settings["ExecStart"] == (
        "/opt/unifrost/.venv/bin/unifrost serve --config /etc/unifrost/unifrost.yaml"
    )


async def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "unifrost.json").read_text())
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 5
    assert {p["type"] for p in dashboard["panels"]} >= {"timeseries", "heatmap"}
    queried = {m for text in json.dumps(dashboard).split('"') for m in METRIC.findall(text)}
    assert "unifrost_delivery_latency_seconds_bucket" in queried
    assert "unifrost_slow_consumer_disconnects_total" in queried

    async with running_server() as srv:
        scrape = await srv.api("GET", "/metrics")
    assert scrape.status == 200
    exported = {
        sample.name
        for family in text_string_to_metric_families(scrape.text)
        for sample in family.samples
    }
    assert queried - exported == set()
