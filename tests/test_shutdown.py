"""Graceful shutdown through the real signal path: farewell frames, drain, exit 0."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.processes import LOOPBACK_PORTS, ServerProcess, serving
from tests.support import Frame, SseClient, http, running_server

DRAIN_TIMEOUT = 3.0
RETRY_MS = 2000
SHUTDOWN_ENV = {"UNIFROST_DRAIN_TIMEOUT": "3s", "UNIFROST_RETRY": "2s"}


async def frames_until_eof(client: SseClient, timeout: float = 5.0) -> list[Frame]:
    """Every frame left on the stream; fails unless the server closes it in time."""
    frames = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            frames.append(await client.frame(max(remaining, 0.01)))
        except asyncio.IncompleteReadError as exc:
            assert exc.partial == b"", exc.partial
            return frames


async def open_streams(server: ServerProcess, count: int) -> tuple[list[str], list[SseClient]]:
    public, admin = await server.started()
    ids, clients = [], []
    for _ in range(count):
        created = await http(("127.0.0.1", admin), "POST", "/consumers", {"topics": ["news"]})
        assert created.status == 201, created.text
        ids.append(created.json()["consumer_id"])
        client = await SseClient(("127.0.0.1", public)).connect(ids[-1])
        assert client.status == 200
        retry, info = await client.opening()
        assert retry == RETRY_MS
        assert info.inner["config"]["consumer_id"] == ids[-1]
        clients.append(client)
    published = await http(("127.0.0.1", admin), "POST", "/publish?topic=news", "before")
    assert published.status == 202
    for client in clients:
        frame = await client.data_frame()
        assert (frame.id, frame.decoded) == ("1", ["news", "before"])
    return ids, clients


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_streams_and_exits_0(sig: signal.Signals, event_loop: str) -> None:
    async with serving(LOOPBACK_PORTS, **SHUTDOWN_ENV, UNIFROST_EVENT_LOOP=event_loop) as server:
        ids, clients = await open_streams(server, 3)
        (started,) = [r for r in server.records if r["event"] == "server.started"]
        assert started["event_loop"] == event_loop  # the loop actually running
        signalled = time.monotonic()
        server.proc.send_signal(sig)
        endings = [await frames_until_eof(client) for client in clients]
        rc = await server.finish(timeout=DRAIN_TIMEOUT + 5)
        elapsed = time.monotonic() - signalled

    assert rc == 0
    assert elapsed < DRAIN_TIMEOUT, elapsed
    assert "Traceback" not in server.stderr
    for frames in endings:
        # Exactly: a jittered retry block, then the closed frame, then EOF.
        assert len(frames) == 2, frames
        retry, closed = frames
        assert retry.data is None
        assert retry.retry is not None
        assert RETRY_MS <= retry.retry <= 2 * RETRY_MS, retry.retry
        assert closed.retry is None
        assert closed.id is None
        assert closed.decoded == ["/unifrost/closed", "server shutting down"]

    events = server.events
    stopping, stopped = events.index("server.stopping"), events.index("server.stopped")
    assert events.index("server.started") < stopping < stopped
    assert server.records[stopping]["connections"] == 3
    closed_logs = [r for r in server.records if r["event"] == "stream.closed"]
    assert sorted(r["consumer_id"] for r in closed_logs) == sorted(ids)
    assert {r["reason"] for r in closed_logs} == {"shutdown"}
    assert all(r["messages"] == 1 for r in closed_logs)
    positions = [i for i, event in enumerate(events) if event == "stream.closed"]
    assert all(stopping < i < stopped for i in positions), events


async def test_signal_with_no_streams_exits_0_promptly() -> None:
    async with serving(LOOPBACK_PORTS, **SHUTDOWN_ENV) as server:
        await server.started()
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        rc = await server.finish(timeout=DRAIN_TIMEOUT + 5)
        elapsed = time.monotonic() - signalled
    assert rc == 0
    assert elapsed < DRAIN_TIMEOUT, elapsed
    assert server.events[-2:] == ["server.stopping", "server.stopped"]


async def test_stalled_reader_does_not_hold_the_exit_past_drain_timeout() -> None:
    async with serving(LOOPBACK_PORTS, **SHUTDOWN_ENV) as server:
        public, admin = await server.started()
        created = await http(("127.0.0.1", admin), "POST", "/consumers", {"topics": ["bulk"]})
        consumer_id = created.json()["consumer_id"]
        # Never read past the head: the kernel buffers fill and the server queues the rest.
        stalled = await SseClient(("127.0.0.1", public)).connect(consumer_id, recv_buffer=4096)
        assert stalled.status == 200
        chunk = "x" * 32 * 1024
        for _ in range(30):
            response = await http(("127.0.0.1", admin), "POST", "/publish?topic=bulk", chunk)
            assert response.status == 202
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        rc = await server.finish(timeout=DRAIN_TIMEOUT + 5)
        elapsed = time.monotonic() - signalled
        stalled.close()
    assert rc == 0
    assert elapsed < DRAIN_TIMEOUT, elapsed
    (closed,) = [r for r in server.records if r["event"] == "stream.closed"]
    assert (closed["consumer_id"], closed["reason"]) == (consumer_id, "shutdown")
    assert server.events[-1] == "server.stopped"


# --- readiness while draining (in process) -----------------------------------------------------


async def test_readyz_turns_503_and_new_streams_are_refused_while_draining() -> None:
    async with running_server() as running:
        consumer_id = await running.create_consumer(["news"])
        ready = await running.public_api("GET", "/readyz")
        assert ready.status == 200
        assert ready.json() == {"status": "ready", "broker": "up", "draining": False}
        ctx = running.server.ctx
        assert ctx is not None
        ctx.state.draining = True
        try:
            for call in (running.public_api, running.api):
                draining = await call("GET", "/readyz")
                assert draining.status == 503
                assert draining.json() == {
                    "status": "unavailable",
                    "broker": "up",
                    "draining": True,
                }
                assert (await call("GET", "/healthz")).status == 200
            refused = await running.stream(consumer_id)
            assert refused.status == 503
            assert refused.error_json()["error"]["code"] == "unavailable"
        finally:
            ctx.state.draining = False
        assert (await running.public_api("GET", "/readyz")).status == 200


async def test_in_process_stop_counts_shutdown_closes() -> None:
    async with running_server(retry=0.5) as running:
        ids = [await running.create_consumer() for _ in range(2)]
        clients = [await running.stream(consumer_id) for consumer_id in ids]
        for client in clients:
            await client.opening()
        await running.server.stop()
        for client in clients:
            retry, closed = await frames_until_eof(client)
            assert retry.retry is not None and 500 <= retry.retry <= 1000
            assert closed.payload == "server shutting down"
        registry = running.metrics.registry
        closes = registry.get_sample_value(
            "unifrost_connections_closed_total", {"reason": "shutdown"}
        )
        assert closes == 2
        assert registry.get_sample_value("unifrost_connections") == 0
