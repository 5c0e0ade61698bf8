"""Fan-out benchmark: one server process, N SSE streams on one topic, M messages.

The server runs in its own process on the memory broker; streams are spread over
several reader processes (each process is capped at 20k open files); messages are
published through the admin API on a keep-alive connection. Reported: deliveries
per wall second and per CPU-second of the server process, and any message lost.

    python -m bench.fanout --streams 1000 --messages 1000
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from bench.servers import free_ports, wait_for_port


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(max_write_buffer: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """unifrost on two free loopback ports, logging warnings only (as in ``make bench``:
    a line per publish would be measured along with the broker)."""
    public, admin = free_ports(2)
    env = {
        **os.environ,
        "UNIFROST_MAX_WRITE_BUFFER": max_write_buffer,
        "UNIFROST_LOG__LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--listen",
            f"127.0.0.1:{public}",
            "--admin-listen",
            f"127.0.0.1:{admin}",
            "--heartbeat",
            "60s",
            "--consumer-ttl",
            "300s",
        ],
        env=env,
    )
    try:
        wait_for_port(public, proc, "unifrost")
        wait_for_port(admin, proc, "unifrost")
    except RuntimeError as exc:
        proc.kill()
        raise SystemExit(str(exc)) from None
    return proc, public, admin


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes) -> Any:
    conn.request(method, path, body=body)
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {data!r}")
    return json.loads(data) if data else None


def _publish(admin: int, messages: int, publishers: int, payload: bytes) -> None:
    """``messages`` publishes spread over ``publishers`` keep-alive connections."""

    def worker(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", admin)
        for _ in range(count):
            conn.request("POST", "/publish?topic=bench", body=payload)
            conn.getresponse().read()
        conn.close()

    shares = [messages // publishers + (i < messages % publishers) for i in range(publishers)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _wait_connected(conn: http.client.HTTPConnection, streams: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        match = re.search(r"^unifrost_connections (\S+)$", text, re.M)
        if match and float(match.group(1)) >= streams:
            return
        time.sleep(0.1)
    raise SystemExit("streams did not all connect")


def reader(public: int, ids: list[str], ready: Any, results: Any, expected: int) -> None:
    """Open one stream per id and count ``id:`` lines until ``expected`` each."""
    socks = []
    for consumer_id in ids:
        sock = socket.create_connection(("127.0.0.1", public))
        sock.sendall(
            f"GET /events?id={consumer_id} HTTP/1.1\r\nHost: x\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        sock.setblocking(False)
        socks.append(sock)
    poller = select.epoll()
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
    by_fd = {sock.fileno(): sock for sock in socks}
    counts = dict.fromkeys(by_fd, 0)
    tails = dict.fromkeys(by_fd, b"")
    ready.put(len(socks))
    total_wanted = expected * len(socks)
    total = 0
    deadline = time.monotonic() + 600
    while total < total_wanted and time.monotonic() < deadline:
        time.sleep(0.005)  # batch: let frames pile up, read many per syscall
        for fd, _ in poller.poll(1.0):
            try:
                data = by_fd[fd].recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                poller.unregister(fd)
                continue
            chunk = tails[fd] + data
            found = chunk.count(b"\nid: ") + (chunk.startswith(b"id: ") and not tails[fd])
            counts[fd] += found
            total += found
            tails[fd] = chunk[-4:]
    results.put(total)
    for sock in socks:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--payload", type=int, default=64, help="payload bytes")
    parser.add_argument("--readers", type=int, default=2, help="reader processes")
    parser.add_argument("--max-write-buffer", default="8MiB")
    parser.add_argument(
        "--publishers", type=int, default=1, help="concurrent publishing connections (bursts)"
    )
    args = parser.parse_args(argv)

    proc, public, admin = start_server(args.max_write_buffer)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", admin)
        ids = [
            _request(conn, "POST", "/consumers", b'{"topics": ["bench"]}')["consumer_id"]
            for _ in range(args.streams)
        ]
        ctx = mp.get_context("spawn")
        ready, results = ctx.Queue(), ctx.Queue()
        shares = [ids[i :: args.readers] for i in range(args.readers)]
        workers = [
            ctx.Process(target=reader, args=(public, share, ready, results, args.messages))
            for share in shares
        ]
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.get(timeout=60)
        _wait_connected(conn, args.streams)
        payload = b"x" * args.payload
        cpu_before = _cpu_seconds(proc.pid)
        started = time.perf_counter()
        _publish(admin, args.messages, args.publishers, payload)
        delivered = sum(results.get(timeout=600) for _ in workers)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(proc.pid) - cpu_before
        for worker in workers:
            worker.join(timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    expected = args.streams * args.messages
    report = {
        "streams": args.streams,
        "messages": args.messages,
        "payload_bytes": args.payload,
        "deliveries": delivered,
        "lost": expected - delivered,
        "wall_s": round(elapsed, 3),
        "deliveries_per_s": round(delivered / elapsed),
        "server_cpu_s": round(cpu, 3),
        "deliveries_per_cpu_s": round(delivered / cpu) if cpu else None,
    }
    print(json.dumps(report))
    return 0 if delivered == expected else 1


if __name__ == "__main__":
    sys.exit(main())
