"""The benchmark's publisher: ``POST /publish?topic=`` over keep-alive connections.

A few raw non-blocking sockets driven by one ``epoll`` loop, each with at most
one request outstanding. A topic always goes through the same connection, so
every server sees each topic's messages in sequence order. The body is
``<seq>:<time ns>:`` padded with dots to a fixed size; the time is when the
request was written (bursts) or when it was due (paced runs, so a server that
stalls the publisher is charged for the wait instead of hiding it).

While it paces, the publishing thread runs at real-time priority where the
system allows it (``SCHED_FIFO``): it shares a core with the load generator,
and a due message must not wait for the load generator's turn, since that wait
would be charged to the server as latency.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

_CONNECT_TIMEOUT = 10.0
_EPOLL_TICK_NS = 1_000_000


@dataclass
class PublishStats:
    sent: int = 0
    errors: int = 0
    first_error: str = ""
    started_ns: int = 0
    finished_ns: int = 0
    #: How late the latest paced message went out, relative to its schedule.
    max_lag_ns: int = 0
    #: Whether a paced run had real-time priority.
    realtime: bool = False

    @property
    def seconds(self) -> float:
        return (self.finished_ns - self.started_ns) / 1e9


class _Connection:
    __slots__ = ("buffer", "busy", "queue", "sock")

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.queue: deque[tuple[int, int, int]] = deque()
        self.busy = False
        self.buffer = b""


class Publisher:
    """Publishes ``(topic index, seq)`` messages to one server.

    Args:
        host, port: where ``POST /publish`` is served.
        topics: topic names, indexed by the messages' topic index.
        connections: keep-alive connections to spread topics over.
        payload_bytes: body size (at least the ``seq:time:`` prefix).
    """

    def __init__(
        self, host: str, port: int, topics: Sequence[str], connections: int, payload_bytes: int
    ) -> None:
        self.topics = topics
        self.payload_bytes = payload_bytes
        self.conns = [_Connection(host, port) for _ in range(max(1, min(connections, len(topics))))]
        self.by_fd = {conn.sock.fileno(): conn for conn in self.conns}
        self.poller = select.epoll()
        for fd in self.by_fd:
            self.poller.register(fd, select.EPOLLIN)
        self._heads = [
            (
                f"POST /publish?topic={name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {payload_bytes}\r\n\r\n"
            ).encode()
            for name in topics
        ]

    def close(self) -> None:
        for conn in self.conns:
            conn.sock.close()
        self.poller.close()

    def run(self, messages: Sequence[tuple[int, int]], rate: float | None = None) -> PublishStats:
        """Publish ``messages`` in order per topic; all at once, or ``rate`` per second."""
        if not rate:
            return self._run(messages, None)
        with realtime_priority() as granted:
            stats = self._run(messages, rate)
        stats.realtime = granted
        return stats

    def _run(self, messages: Sequence[tuple[int, int]], rate: float | None) -> PublishStats:
        stats = PublishStats(started_ns=time.time_ns())
        interval_ns = 1e9 / rate if rate else 0.0
        conns = self.conns
        released = 0
        outstanding = 0
        while released < len(messages) or outstanding:
            now = time.time_ns()
            while released < len(messages):
                due = stats.started_ns + int(released * interval_ns) if rate else 0
                if due > now:
                    break
                topic, seq = messages[released]
                conns[topic % len(conns)].queue.append((topic, seq, due))
                released += 1
                outstanding += 1
            for conn in conns:
                if not conn.busy and conn.queue:
                    self._send(conn, stats)
            if released < len(messages) and rate:
                next_due = stats.started_ns + int(released * interval_ns)
                timeout = _wait_for(next_due)
            else:
                timeout = 1.0
            for fd, _events in self.poller.poll(timeout):
                conn = self.by_fd[fd]
                if self._receive(conn, stats):
                    outstanding -= 1
                    if conn.queue:
                        self._send(conn, stats)
        stats.finished_ns = time.time_ns()
        return stats

    def _send(self, conn: _Connection, stats: PublishStats) -> None:
        topic, seq, due = conn.queue.popleft()
        now = time.time_ns()
        stamp = due or now
        if due:
            stats.max_lag_ns = max(stats.max_lag_ns, now - due)
        body = (b"%d:%d:" % (seq, stamp)).ljust(self.payload_bytes, b".")
        if len(body) != self.payload_bytes:
            raise ValueError(f"payload_bytes={self.payload_bytes} is too small for {body!r}")
        conn.sock.sendall(self._heads[topic] + body)
        conn.busy = True

    def _receive(self, conn: _Connection, stats: PublishStats) -> bool:
        """Read from ``conn``; True once its response is complete."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return False
        if not data:
            raise ConnectionError("the server closed a publish connection")
        buffer = conn.buffer + data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            conn.buffer = buffer
            return False
        head = buffer[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(buffer) < end + 4 + length:
            conn.buffer = buffer
            return False
        conn.buffer = buffer[end + 4 + length :]
        conn.busy = False
        stats.sent += 1
        status = head.split(" ", 2)[1]
        if not status.startswith("2"):
            stats.errors += 1
            stats.first_error = stats.first_error or head.split("\r\n", 1)[0]
        return True


def _wait_for(due_ns: int) -> float:
    """How long to wait for answers before ``due_ns`` (seconds, for ``epoll.poll``).

    ``epoll_wait`` counts whole milliseconds, rounded up, which would send a
    paced message up to a millisecond late, and the message's latency would
    carry it. So the wait stops a millisecond short and the rest is slept
    precisely here (``clock_nanosleep``); answers arriving meanwhile are read
    right after the send.
    """
    left_ns = due_ns - time.time_ns()
    if left_ns > _EPOLL_TICK_NS:
        return (left_ns - _EPOLL_TICK_NS) / 1e9
    if left_ns > 0:
        time.sleep(left_ns / 1e9)
    return 0.0


@contextmanager
def realtime_priority() -> Iterator[bool]:
    """The calling thread at ``SCHED_FIFO`` priority 1 inside the block, if allowed.

    Yields whether it was granted. The kernel's real-time throttling (95% of
    each second by default) keeps a runaway thread from owning the core.
    """
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):  # not Linux, or not permitted
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, before[0], before[1])
