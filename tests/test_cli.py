"""The ``unifrost`` command (and ``python -m service``) as a user runs it: real processes."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path

import pytest

from service import __version__
from tests.processes import (
    LOOPBACK_PORTS,
    PYTHON_M,
    SCRIPT,
    port_of,
    problem_lines,
    run,
    serving,
)
from tests.support import http

# --- version and usage -----------------------------------------------------------------------


@pytest.mark.parametrize("command", [PYTHON_M, SCRIPT], ids=["python-m", "script"])
def test_version(command: list[str]) -> None:
    result = run(["--version"], command)
    assert result.returncode == 0
    assert result.stdout.strip() == f"unifrost {__version__}"


def test_no_command_prints_usage_and_exits_2() -> None:
    result = run([])
    assert result.returncode == 2
    assert "serve" in result.stdout + result.stderr


# --- configuration errors ---------------------------------------------------------------------


def test_invalid_flags_give_one_line_per_key_and_exit_2() -> None:
    result = run(["serve", *LOOPBACK_PORTS, "--consumer-ttl", "abc", "--heartbeat", "-1"])
    assert result.returncode == 2
    lines = problem_lines(result)
    assert len(lines) == 2, lines
    assert [line for line in lines if "consumer_ttl" in line] == [lines[0]]
    assert [line for line in lines if "heartbeat" in line] == [lines[1]]
    assert "'abc'" in lines[0]
    assert result.stdout == ""


def test_invalid_env_value_names_the_nested_key() -> None:
    result = run(["serve", *LOOPBACK_PORTS], UNIFROST_BUFFER__MAX_MESSAGES="lots")
    assert result.returncode == 2
    lines = problem_lines(result)
    assert len(lines) == 1, lines
    assert "buffer.max_messages" in lines[0]
    assert "lots" in lines[0]


def test_invalid_yaml_values_are_all_reported(tmp_path: Path) -> None:
    config = tmp_path / "unifrost.yaml"
    config.write_text("heartbeat: soon\nbuffer:\n  max_bytes: huge\nlisten: 127.0.0.1:0\n")
    result = run(["serve", "--config", str(config), "--admin-listen", "127.0.0.1:0"])
    assert result.returncode == 2
    lines = problem_lines(result)
    assert len(lines) == 2, lines
    assert [line for line in lines if "heartbeat" in line] == [lines[0]]
    assert [line for line in lines if "buffer.max_bytes" in line] == [lines[1]]


def test_file_env_and_flag_problems_are_reported_together(tmp_path: Path) -> None:
    config = tmp_path / "unifrost.yaml"
    config.write_text("retry: later\n")
    result = run(
        ["serve", "--config", str(config), *LOOPBACK_PORTS, "--log-level", "chatty"],
        UNIFROST_MAX_WRITE_BUFFER="big",
    )
    assert result.returncode == 2
    lines = problem_lines(result)
    assert len(lines) == 3, lines
    for key in ("retry", "max_write_buffer", "log.level"):
        assert sum(key in line for line in lines) == 1, (key, lines)


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run(["serve", "--config", str(missing), *LOOPBACK_PORTS])
    assert result.returncode == 2
    lines = problem_lines(result)
    assert len(lines) == 1, lines
    assert str(missing) in lines[0]


def test_public_admin_listener_without_token_is_refused() -> None:
    result = run(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
    assert result.returncode == 2
    lines = problem_lines(result)
    assert len(lines) == 1, lines
    assert "admin_listen" in lines[0]
    assert "admin_token" in lines[0]
    assert "0.0.0.0" in lines[0]


async def test_public_admin_listener_with_token_starts() -> None:
    token = "cli-t0ken-Jk3mQ"
    args = ["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0", "--admin-token", token]
    async with serving(args) as server:
        record = await server.next_event("server.started")
        assert record["admin_listen"].startswith("0.0.0.0:")
        admin = ("127.0.0.1", port_of(record["admin_listen"]))
        assert (await http(admin, "GET", "/consumers")).status == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert (await http(admin, "GET", "/consumers", headers=auth)).status == 200
        server.proc.send_signal(signal.SIGTERM)
        assert await server.finish() == 0
    assert token not in json.dumps(server.records)
    assert token not in server.stderr


@pytest.mark.parametrize("url", ["foo://somewhere", "mqtt-ish://h:1", "no-scheme"])
def test_unsupported_broker_exits_2(url: str) -> None:
    result = run(["serve", *LOOPBACK_PORTS, "--broker", url])
    assert result.returncode == 2
    lines = problem_lines(result)
    assert len(lines) == 1, lines
    assert "broker" in lines[0]
    assert url.split("://")[0] in lines[0]


@pytest.mark.parametrize("which", ["--listen", "--admin-listen"])
def test_address_in_use_is_one_line_without_traceback(which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        args[args.index(which) + 1] = f"127.0.0.1:{port}"
        result = run(args)
    assert result.returncode not in (0, None)
    lines = problem_lines(result)
    assert len(lines) == 1, lines
    assert "address already in use" in lines[0].lower()


# --- serving ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [PYTHON_M, SCRIPT], ids=["python-m", "script"])
async def test_serve_starts_and_stops_on_sigterm(command: list[str]) -> None:
    async with serving(LOOPBACK_PORTS, command) as server:
        started = await server.next_event("server.started")
        assert started["version"] == __version__
        assert started["level"] == "info"
        public, admin = port_of(started["listen"]), port_of(started["admin_listen"])
        assert started["listen"] == f"127.0.0.1:{public}"
        assert started["admin_listen"] == f"127.0.0.1:{admin}"
        assert public != admin
        health = await http(("127.0.0.1", public), "GET", "/healthz")
        assert (health.status, health.json()) == (200, {"status": "ok"})
        created = await http(("127.0.0.1", admin), "POST", "/consumers", {})
        assert created.status == 201
        server.proc.send_signal(signal.SIGTERM)
        assert await server.finish() == 0
    assert "Traceback" not in server.stderr
    events = server.events
    assert events.index("server.started") < events.index("server.stopping")
    assert events.index("server.stopping") < events.index("server.stopped")
    assert "consumer.created" in events


async def test_flags_reach_the_running_server() -> None:
    args = [*LOOPBACK_PORTS, "--consumer-ttl", "250ms", "--heartbeat", "2s", "--log-level", "info"]
    async with serving(args, UNIFROST_RETRY="1500ms") as server:
        public, admin = await server.started()
        created = await http(("127.0.0.1", admin), "POST", "/consumers", {"topics": ["t"]})
        assert created.json()["consumer_ttl_millis"] == 250
        reader, writer = await asyncio.open_connection("127.0.0.1", public)
        consumer_id = created.json()["consumer_id"]
        writer.write(f"GET /events?id={consumer_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\n\n"), 5) == b"retry: 1500\n\n"
        info = json.loads((await reader.readuntil(b"\n\n")).split(b"data: ", 1)[1])
        config = json.loads(info[1])["config"]
        assert (config["consumer_ttl_millis"], config["heartbeat_millis"]) == (250, 2000)
        writer.close()
        server.proc.send_signal(signal.SIGTERM)
        assert await server.finish() == 0
