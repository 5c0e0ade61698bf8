"""The five scenarios, and how one of them runs against one server.

Every run starts a fresh server (so CPU and memory readings belong to that
scenario alone), measures its memory, connects the streams, publishes, waits
until every stream has every message of its topic (or until nothing has
arrived for ``idle_timeout``), then stops the server. The result is a flat dict
of numbers; :mod:`bench.report` turns those into the table.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from bench.loadgen import ConnectStats, DeliveryStats, LoadGenerator, core_times, cpu_times
from bench.publisher import Publisher, PublishStats
from bench.servers import ServerSet

_HOST = "127.0.0.1"
_PUBLISH_CONNECTIONS = 8
# Idle streams settle (allocator, lazy structures) before memory is read.
_IDLE_SETTLE = 2.0
_MIN_SAMPLES_PER_MESSAGE = 10
# CPU time is counted in 10 ms ticks: shorter windows cannot tell noise apart.
_MIN_NOISE_WINDOW = 1.0


@dataclass(frozen=True)
class Scenario:
    """One workload.

    ``kind`` is ``burst`` (``per_topic`` messages on every topic, published as
    fast as the server takes them), ``paced`` (``rate`` messages per second over
    all topics for ``seconds``), ``idle`` (streams only) or ``storm`` (paced, and
    every stream drops and resumes ``storm_after`` seconds in).
    """

    key: str
    kind: str
    streams: int
    topics: int
    per_topic: int = 0
    rate: float = 0.0
    seconds: float = 0.0
    storm_after: float = 0.0

    @property
    def title(self) -> str:
        topics = f"{self.topics:,} topic{'s' if self.topics > 1 else ''}"
        streams = f"{self.streams:,} {'idle ' if self.kind == 'idle' else ''}streams, {topics}"
        if self.kind == "burst":
            return f"{streams}, burst of {self.per_topic} per topic"
        if self.kind == "paced":
            return f"{streams}, steady {self.rate:,.0f} msg/s for {self.seconds:g} s"
        if self.kind == "storm":
            return (
                f"{streams}, {self.rate:,.0f} msg/s for {self.seconds:g} s; every stream "
                f"drops and resumes at {self.storm_after:g} s"
            )
        return streams

    def scaled(self, factor: float) -> Scenario:
        """A smaller copy for smoke runs: fewer streams and topics, same shape."""
        if factor == 1:
            return self
        return replace(
            self,
            streams=max(1, round(self.streams * factor)),
            topics=max(1, round(self.topics * factor)),
            rate=self.rate * factor,
        )

    def messages(self) -> list[tuple[int, int]]:
        """(topic index, seq) in publishing order; seqs count 1, 2, 3... per topic."""
        if self.kind == "burst":
            return [(t, seq) for seq in range(1, self.per_topic + 1) for t in range(self.topics)]
        if self.kind in ("paced", "storm"):
            count = round(self.rate * self.seconds)
            return [(i % self.topics, i // self.topics + 1) for i in range(count)]
        return []

    def finals(self) -> list[int]:
        """The last seq of every topic."""
        last = [0] * self.topics
        for topic, seq in self.messages():
            last[topic] = seq
        return last


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario("a", "burst", streams=10_000, topics=1, per_topic=100),
        Scenario("b", "burst", streams=10_000, topics=1_000, per_topic=20),
        Scenario("c", "paced", streams=1_000, topics=100, rate=1_000, seconds=10),
        Scenario("d", "idle", streams=20_000, topics=1_000),
        Scenario("e", "storm", streams=10_000, topics=100, rate=200, seconds=10, storm_after=3),
    )
}


@dataclass(frozen=True)
class RunConfig:
    """Settings shared by every run."""

    server_cpu: int | None
    client_cpu: int | None
    #: Open files one process may have (the hard RLIMIT_NOFILE, capped).
    fd_limit: int
    payload_bytes: int = 64
    #: Connects in flight per load-generator process.
    window: int = 64
    #: Give up waiting once no message arrived for this long.
    idle_timeout: float = 10.0

    def server_processes(self, streams: int) -> int:
        """Server processes needed for ``streams`` (one file per stream)."""
        return max(1, math.ceil(streams / (self.fd_limit - 500)))

    @property
    def streams_per_loadgen(self) -> int:
        return self.fd_limit - 1000


class CpuWindow:
    """CPU seconds spent between its creation and :meth:`elapsed`."""

    def __init__(self, read: Callable[[], tuple[float, float]]) -> None:
        self.read = read
        self.start = read()

    def elapsed(self) -> tuple[float, float]:
        """(user, system) seconds so far (for a core: busy, softirq)."""
        first, second = self.read()
        return first - self.start[0], second - self.start[1]


class Meters:
    """Every CPU reading of one measurement window.

    The server's and the load generator's processes, this process (the
    publisher), and the two cores as a whole: a core busier than the processes
    pinned to it was shared with other work, which :func:`cpu_metrics` reports
    as noise.
    """

    def __init__(self, server: ServerSet, loadgen: LoadGenerator, config: RunConfig) -> None:
        self.windows = {
            "server": CpuWindow(server.cpu_times),
            "loadgen": CpuWindow(loadgen.cpu_times),
            "publisher": CpuWindow(partial(cpu_times, os.getpid())),
        }
        if config.server_cpu is not None:
            self.windows["server_core"] = CpuWindow(partial(core_times, config.server_cpu))
        if config.client_cpu is not None:
            self.windows["client_core"] = CpuWindow(partial(core_times, config.client_cpu))

    def elapsed(self) -> dict[str, tuple[float, float]]:
        return {name: window.elapsed() for name, window in self.windows.items()}


def cpu_metrics(
    readings: dict[str, tuple[float, float]], wall: float, prefix: str = ""
) -> dict[str, Any]:
    """CPU seconds per party, and how much of the window other work took from each core."""
    server = sum(readings["server"])
    loadgen = sum(readings["loadgen"])
    out: dict[str, Any] = {
        f"{prefix}server_cpu_s": round(server, 2),
        f"{prefix}server_user_s": round(readings["server"][0], 2),
        f"{prefix}server_sys_s": round(readings["server"][1], 2),
        f"{prefix}loadgen_cpu_s": round(loadgen, 2),
    }
    noise = 0.0
    if "server_core" in readings:
        busy, softirq = readings["server_core"]
        other = max(0.0, busy - server)
        out[f"{prefix}server_core_softirq_s"] = round(softirq, 2)
        out[f"{prefix}server_core_other_s"] = round(other, 2)
        noise = max(noise, other / max(wall, _MIN_NOISE_WINDOW))
    if "client_core" in readings:
        busy, _softirq = readings["client_core"]
        other = max(0.0, busy - loadgen - sum(readings["publisher"]))
        out[f"{prefix}client_core_other_s"] = round(other, 2)
        noise = max(noise, other / max(wall, _MIN_NOISE_WINDOW))
    out[f"{prefix}noise"] = round(noise, 3)
    return out


def percentiles_ms(latencies_ns: Iterable[int], prefix: str = "latency") -> dict[str, float]:
    """p50/p90/p99/p99.9/max of nanosecond latencies, in milliseconds."""
    ordered: list[int] = sorted(latencies_ns)
    if not ordered:
        return {}
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] / 1e6, 2)

    return {
        f"{prefix}_p50_ms": at(0.50),
        f"{prefix}_p90_ms": at(0.90),
        f"{prefix}_p99_ms": at(0.99),
        f"{prefix}_p999_ms": at(0.999),
        f"{prefix}_max_ms": round(ordered[-1] / 1e6, 2),
    }


def fanout_metrics(samples: list[tuple[int, int, int]]) -> dict[str, float]:
    """When each message's fan-out began and how long it took, from sampled streams.

    ``first_delivery`` is a message's latency on the first sampled stream that
    got it; ``fanout_spread`` is the time from there to the last one. Only
    reported when every message reached enough sampled streams to say so.
    """
    first: dict[tuple[int, int], int] = {}
    last: dict[tuple[int, int], int] = {}
    for topic, seq, latency in samples:
        key = (topic, seq)
        if latency < first.get(key, latency + 1):
            first[key] = latency
        if latency > last.get(key, -1):
            last[key] = latency
    if not first or len(samples) < _MIN_SAMPLES_PER_MESSAGE * len(first):
        return {}
    firsts = sorted(first.values())
    spreads = sorted(last[key] - first[key] for key in first)
    n = len(firsts)
    return {
        "first_delivery_p50_ms": round(firsts[n // 2] / 1e6, 2),
        "first_delivery_p99_ms": round(firsts[min(n - 1, int(0.99 * n))] / 1e6, 2),
        "fanout_spread_p50_ms": round(spreads[n // 2] / 1e6, 2),
        "fanout_spread_p99_ms": round(spreads[min(n - 1, int(0.99 * n))] / 1e6, 2),
    }


def _connect_metrics(wave: ConnectStats, prefix: str) -> dict[str, Any]:
    ordered = sorted(wave.latencies_ns)
    n = len(ordered)
    return {
        f"{prefix}_s": round(wave.seconds, 3),
        f"{prefix}_p50_ms": round(ordered[n // 2] / 1e6, 2) if n else None,
        f"{prefix}_p99_ms": round(ordered[min(n - 1, int(0.99 * n))] / 1e6, 2) if n else None,
        f"{prefix}_opened": wave.opened,
        f"{prefix}_failed": wave.failed,
        f"{prefix}_retried": wave.retried,
        **({f"{prefix}_errors": wave.errors} if wave.errors else {}),
    }


def _delivery_metrics(
    scenario: Scenario,
    published: PublishStats,
    delivered: DeliveryStats,
    readings: dict[str, tuple[float, float]],
) -> dict[str, Any]:
    finals = scenario.finals()
    expected = sum(finals[i % scenario.topics] for i in range(scenario.streams))
    wall = max(1e-9, (delivered.completed_ns - published.started_ns) / 1e9)
    cpu = cpu_metrics(readings, wall)
    return {
        "published": published.sent,
        "publish_errors": published.errors,
        **({"publish_first_error": published.first_error} if published.errors else {}),
        "publish_s": round(published.seconds, 3),
        "publish_max_lag_ms": round(published.max_lag_ns / 1e6, 2),
        "publisher_realtime": published.realtime,
        "expected": expected,
        "deliveries": delivered.deliveries,
        "frames_per_read": round(delivered.deliveries / max(1, delivered.reads), 2),
        "probe_frames_per_read": round(len(delivered.samples) / max(1, delivered.probe_reads), 2),
        "lost": delivered.lost,
        "duplicated": delivered.duplicated,
        "out_of_order": delivered.out_of_order,
        "all_delivered": delivered.lost == 0 and delivered.deliveries >= expected,
        "complete_streams": delivered.complete_streams,
        "closed_by_server": delivered.closed_by_server,
        "wall_s": round(wall, 3),
        "deliveries_per_s": round(delivered.deliveries / wall),
        "deliveries_per_cpu_s": round(delivered.deliveries / max(cpu["server_cpu_s"], 0.01)),
        **cpu,
        "loadgen_busy": round(cpu["loadgen_cpu_s"] / wall, 2),
        **percentiles_ms(latency for _topic, _seq, latency in delivered.samples),
        **percentiles_ms(delivered.latencies_ns, "all_latency"),
        **percentiles_ms(delivered.read_latencies_ns, "read_latency"),
        **fanout_metrics(delivered.samples),
    }


def run(scenario: Scenario, server_cls: type[ServerSet], config: RunConfig) -> dict[str, Any]:
    """Run ``scenario`` against a fresh ``server_cls``; never raises."""
    if scenario.kind == "storm" and not server_cls.resumable:
        return {"status": "n/a", "reason": "streams cannot resume with Last-Event-ID"}
    processes = config.server_processes(scenario.streams)
    result: dict[str, Any] = {
        "status": "ok",
        "streams": scenario.streams,
        "topics": scenario.topics,
        "server_processes": processes,
    }
    try:
        with server_cls(processes, config.server_cpu, config.fd_limit) as server:
            result.update(_run_on(scenario, server, config))
            problems = server.problems()
            if problems:
                result["server_problems"] = problems
    except Exception as exc:  # one broken run must not lose the others
        result["status"] = f"error: {type(exc).__name__}: {exc}"
    return result


def _run_on(scenario: Scenario, server: ServerSet, config: RunConfig) -> dict[str, Any]:
    topics = [f"bench-{t}" for t in range(scenario.topics)]
    time.sleep(0.5)  # let the fresh processes finish starting up
    rss_before, pss_before = server.memory_kib()
    loadgen = LoadGenerator(
        server.protocol,
        server.stream_ports,
        topics,
        scenario.streams,
        per_process=config.streams_per_loadgen,
        window=config.window,
        cpu=config.client_cpu,
        resumable=scenario.kind == "storm",
    )
    out: dict[str, Any] = {"loadgen_processes": len(loadgen.processes)}
    try:
        meters = Meters(server, loadgen, config)
        wave = loadgen.connect()
        out.update(_connect_metrics(wave, "connect"))
        out.update(cpu_metrics(meters.elapsed(), max(wave.seconds, 1e-3), "connect_"))
        if scenario.kind == "idle":
            time.sleep(_IDLE_SETTLE)
        rss_after, pss_after = server.memory_kib()
        opened = max(1, wave.opened)
        out.update(
            rss_before_kib=rss_before,
            rss_after_kib=rss_after,
            rss_per_stream_kib=round((rss_after - rss_before) / opened, 2),
            pss_per_stream_kib=round((pss_after - pss_before) / opened, 2),
        )
        if scenario.kind in ("burst", "paced", "storm"):
            out.update(_publish(scenario, server, loadgen, config, topics))
    finally:
        loadgen.close()
    out["noise"] = max(out.get("connect_noise", 0.0), out.get("noise", 0.0))
    return out


def _publish(
    scenario: Scenario,
    server: ServerSet,
    loadgen: LoadGenerator,
    config: RunConfig,
    topics: list[str],
) -> dict[str, Any]:
    publisher = Publisher(
        _HOST, server.publish_port, topics, _PUBLISH_CONNECTIONS, config.payload_bytes
    )
    messages = scenario.messages()
    out: dict[str, Any] = {}
    try:
        meters = Meters(server, loadgen, config)
        if scenario.kind == "storm":
            published = _publish_with_storm(scenario, server, loadgen, publisher, messages, out)
        else:
            published = publisher.run(messages, scenario.rate or None)
        timeout = config.idle_timeout + 600
        delivered = loadgen.expect(scenario.finals(), config.idle_timeout, timeout)
        readings = meters.elapsed()
    finally:
        publisher.close()
    out.update(_delivery_metrics(scenario, published, delivered, readings))
    return out


def _publish_with_storm(
    scenario: Scenario,
    server: ServerSet,
    loadgen: LoadGenerator,
    publisher: Publisher,
    messages: list[tuple[int, int]],
    out: dict[str, Any],
) -> PublishStats:
    """Publish at the scenario's rate; meanwhile drop and resume every stream."""
    outcome: dict[str, Any] = {}

    def publish() -> None:
        try:
            outcome["stats"] = publisher.run(messages, scenario.rate)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=publish, name="publisher")
    thread.start()
    time.sleep(scenario.storm_after)
    storm_cpu = CpuWindow(server.cpu_times)
    wave = loadgen.storm()
    out.update(_connect_metrics(wave, "reconnect"))
    out["reconnect_server_cpu_s"] = round(sum(storm_cpu.elapsed()), 2)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    stats: PublishStats = outcome["stats"]
    return stats
