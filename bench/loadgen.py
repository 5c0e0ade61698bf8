"""The load generator: thousands of SSE streams read by a few epoll processes.

Every worker process owns a share of the streams on non-blocking sockets and one
``epoll`` loop. Streams open through a bounded window of connects in flight (so
no server's listen backlog overflows), from source addresses ``127.0.0.2``... so
ephemeral ports never run short. Each ``recv`` is parsed with C-level calls
only: one ``rfind`` for the last complete frame and one ``re.findall`` for the
payloads. A payload is ``<seq>:<publish time ns>:<padding>`` on every server, so
the same pattern finds it in unifrost's JSON array, in nchan's raw ``data:``
line and in sse-starlette's ``data:`` line (inside HTTP chunks).

Per stream the worker checks that the topic's sequence numbers arrive 1, 2, 3...
(lost, duplicated, out-of-order) and records two latencies for every delivery:
from the publish to the frame's *arrival* in the stream's socket (the kernel's
receive timestamp, ``SO_TIMESTAMPNS``) and to the *read* that returned it. A
read returning several frames carries the timestamp of the last segment it
took, so an arrival is never earlier than it was; the read time adds whatever
the load generator itself was busy with, which is why the two are kept apart.
When the load generator falls behind, frames queue in their sockets and the
kernel merges them, so an earlier frame takes a later one's stamp: one stream
in :data:`PROBE_EVERY` of each topic is therefore a probe, read ahead of the
others (:func:`probes`), and the judged latency comes from the probes alone.
The orchestrating process drives the workers through pipes with
:class:`LoadGenerator`.
"""

from __future__ import annotations

import errno
import math
import multiprocessing as mp
import os
import re
import select
import socket
import sys
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

PAYLOAD = re.compile(rb"(\d+):(\d{19})")
_RECV_BYTES = 1 << 20
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_MAX_TAIL = 1 << 20
_CONNECT_ATTEMPTS = 3
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # also the cmsg type (SCM_)
_STAMP_SPACE = socket.CMSG_SPACE(16)  # one struct timespec
#: One stream in this many is a *probe* (see :func:`probes`): it sits in an
#: epoll set of its own that the loop serves after every batch of events, so
#: each of its frames is read before the next one reaches its socket however far
#: the other streams lag, and no probe frame shares another's arrival stamp.
#: Probes also keep (topic, seq, latency) per delivery, for the fan-out
#: diagnostics.
PROBE_EVERY = 10
#: Events taken from the epoll set per call: bounds how long probes wait.
_BATCH = 256

# Stream states.
_IDLE, _CONNECTING, _REQUESTED, _OPEN, _FAILED = range(5)


@dataclass(frozen=True)
class StreamProtocol:
    """How one server's streams are opened, resumed and split into frames."""

    #: Request target of a new stream; ``{topic}`` is filled in.
    path: str
    #: Frame terminator (sse-starlette uses CRLF line ends).
    separator: bytes = b"\n\n"
    #: Request target of a resumed stream (``{topic}``, ``{consumer_id}``), or
    #: None when the server cannot resume a stream.
    resume_path: str | None = None
    #: Finds the consumer id in a stream's first frames (unifrost's info frame).
    consumer_id_pattern: bytes | None = None


@dataclass(frozen=True)
class WorkerPlan:
    """One worker's share: which topic each of its streams reads, and where."""

    protocol: StreamProtocol
    host: str
    ports: list[int]
    #: (topic index, index into ``ports``) per stream.
    streams: list[tuple[int, int]]
    topic_names: list[str]
    sources: list[str]
    window: int
    cpu: int | None
    #: Remember event and consumer ids, for :meth:`LoadGenerator.storm`.
    resumable: bool


@dataclass
class ConnectStats:
    """How a wave of connects went (initial connect or reconnect storm)."""

    streams: int = 0
    opened: int = 0
    failed: int = 0
    retried: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def merge(self, other: ConnectStats) -> None:
        self.streams += other.streams
        self.opened += other.opened
        self.failed += other.failed
        self.retried += other.retried
        self.started_ns = min(filter(None, (self.started_ns, other.started_ns)), default=0)
        self.finished_ns = max(self.finished_ns, other.finished_ns)
        self.latencies_ns.extend(other.latencies_ns)
        self.errors.extend(other.errors[: max(0, 5 - len(self.errors))])

    @property
    def seconds(self) -> float:
        return (self.finished_ns - self.started_ns) / 1e9


@dataclass
class DeliveryStats:
    """What the streams received, checked against what was published."""

    streams: int = 0
    deliveries: int = 0
    #: Reads that returned at least one payload frame.
    reads: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    complete_streams: int = 0
    closed_by_server: int = 0
    completed_ns: int = 0
    #: Publish to arrival in the stream's socket, per delivery.
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    #: Publish to the load generator's read of it, per delivery.
    read_latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    #: Reads on the probe streams that returned at least one payload frame.
    probe_reads: int = 0
    #: (topic, seq, arrival latency ns) of every delivery on the probe streams.
    samples: list[tuple[int, int, int]] = field(default_factory=list)

    def merge(self, other: DeliveryStats) -> None:
        self.streams += other.streams
        self.deliveries += other.deliveries
        self.reads += other.reads
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.out_of_order += other.out_of_order
        self.complete_streams += other.complete_streams
        self.closed_by_server += other.closed_by_server
        self.completed_ns = max(self.completed_ns, other.completed_ns)
        self.latencies_ns.extend(other.latencies_ns)
        self.read_latencies_ns.extend(other.read_latencies_ns)
        self.probe_reads += other.probe_reads
        self.samples.extend(other.samples)


class _Worker:
    """The epoll loop of one load-generator process."""

    def __init__(self, plan: WorkerPlan, control: Connection) -> None:
        self.plan = plan
        self.control = control
        proto = plan.protocol
        self.separator = proto.separator
        self.cid_pattern = (
            re.compile(proto.consumer_id_pattern) if proto.consumer_id_pattern else None
        )
        n = len(plan.streams)
        self.n = n
        self.topic = [topic for topic, _ in plan.streams]
        self.socks: list[socket.socket | None] = [None] * n
        self.state = [_IDLE] * n
        self.by_fd: dict[int, int] = {}
        self.tails = [b""] * n
        self.next_seq = [1] * n
        self.missing: list[set[int] | None] = [None] * n
        self.consumer_ids: list[str | None] = [None] * n
        self.last_ids: list[bytes | None] = [None] * n
        self.attempts = [0] * n
        self.started = [0] * n
        self.resuming = False
        self.track_ids = plan.resumable and proto.resume_path is not None
        self.poller = select.epoll()
        self.control_fd = control.fileno()
        self.poller.register(self.control_fd, select.EPOLLIN)
        self.probe = probes([topic for topic, _ in plan.streams])
        self.probe_poller = select.epoll()
        self.poller.register(self.probe_poller.fileno(), select.EPOLLIN)
        self.buffer = bytearray(_RECV_BYTES)
        self.buffers = [self.buffer]
        self.view = memoryview(self.buffer)
        self.exit = False
        # Connect wave.
        self.pending: deque[int] = deque()
        self.in_flight = 0
        self.wave: ConnectStats | None = None
        # Delivery accounting.
        self.deliveries = 0
        self.reads = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.closed_by_server = 0
        self.latencies: array[int] = array("q")
        self.read_latencies: array[int] = array("q")
        self.probe_reads = 0
        # (topic, seq, latency) per probe delivery: the judged latency, and when
        # each message's fan-out began and ended.
        self.samples: list[tuple[int, int, int]] = []
        self.final: list[int] | None = None  # per stream: the last seq of its topic
        self.done = [False] * n
        self.done_count = 0
        self.completed_ns = 0  # when the last stream got its last message
        self.progress_ns = 0  # when the latest message arrived
        self.expect_ns = 0  # when the orchestrator started waiting
        self.idle_timeout_ns = 0

    # --- the loop ---------------------------------------------------------------

    def run(self) -> None:
        while not self.exit:
            busy = self.in_flight or self.final is not None
            self.turn(0.05 if busy else 0.5)

    def turn(self, timeout: float) -> None:
        """One batch of events (waiting up to ``timeout`` for the first), then the probes.

        The probes' epoll set is itself in the main one, so it wakes this wait.
        """
        self._serve(self.poller.poll(timeout, _BATCH))
        self._serve(self.probe_poller.poll(0))
        if self.pending and self.in_flight < self.plan.window:
            self._pump()
        if self.wave is not None and not self.in_flight and not self.pending:
            self._finish_wave()
        if self.final is not None:
            self._check_done()

    def _serve(self, events: list[tuple[int, int]]) -> None:
        by_fd = self.by_fd
        state = self.state
        for fd, _events in events:
            if fd == self.control_fd:
                self._command(self.control.recv())
                continue
            i = by_fd.get(fd)
            if i is None:  # the probes' epoll set, served after the batch
                continue
            st = state[i]
            if st == _OPEN:
                self._read(i, fd)
            elif st == _CONNECTING:
                self._connected(i, fd)
            elif st == _REQUESTED:
                self._read_head(i, fd)

    def _poller(self, i: int) -> select.epoll:
        return self.probe_poller if self.probe[i] else self.poller

    def _command(self, message: tuple[Any, ...]) -> None:
        name = message[0]
        if name == "connect":
            self._start_wave(resume=False)
        elif name == "storm":
            self._drop_all()
            self._start_wave(resume=True)
        elif name == "expect":
            finals, idle_timeout = message[1], message[2]
            self.final = [finals[t] for t in self.topic]
            self.idle_timeout_ns = int(idle_timeout * 1e9)
            self.expect_ns = time.time_ns()
            self.done_count = 0
            for i in range(self.n):
                self.done[i] = self.next_seq[i] > self.final[i]
                self.done_count += self.done[i]
        elif name == "close":
            for sock in self.socks:
                if sock is not None:
                    sock.close()
            self.exit = True
            self.control.send(("closed",))

    # --- connecting -------------------------------------------------------------

    def _start_wave(self, resume: bool) -> None:
        self.resuming = resume
        self.wave = ConnectStats(streams=self.n, started_ns=time.time_ns())
        self.pending.extend(range(self.n))
        for i in range(self.n):
            self.attempts[i] = 0

    def _pump(self) -> None:
        window = self.plan.window
        while self.pending and self.in_flight < window:
            self._open(self.pending.popleft())

    def _open(self, i: int) -> None:
        plan = self.plan
        self.in_flight += 1
        self.attempts[i] += 1
        self.started[i] = time.time_ns()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.bind((plan.sources[i % len(plan.sources)], 0))
        self.socks[i] = sock
        err = sock.connect_ex((plan.host, plan.ports[plan.streams[i][1]]))
        if err not in (0, errno.EINPROGRESS):
            self._attempt_failed(i, f"connect: {os.strerror(err)}")
            return
        self.by_fd[sock.fileno()] = i
        self.state[i] = _CONNECTING
        self._poller(i).register(sock.fileno(), select.EPOLLOUT)

    def _request(self, i: int) -> bytes:
        proto = self.plan.protocol
        topic = self.plan.topic_names[self.topic[i]]
        path = proto.path.format(topic=topic)
        headers = ["Host: 127.0.0.1", "Accept: text/event-stream"]
        if self.resuming and proto.resume_path is not None:
            path = proto.resume_path.format(topic=topic, consumer_id=self.consumer_ids[i] or "")
            last_id = self.last_ids[i]
            if last_id is not None:
                headers.append(f"Last-Event-ID: {last_id.decode()}")
        head = "".join(f"{header}\r\n" for header in headers)
        return f"GET {path} HTTP/1.1\r\n{head}\r\n".encode()

    def _connected(self, i: int, fd: int) -> None:
        sock = self.socks[i]
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._attempt_failed(i, f"connect: {os.strerror(err)}")
            return
        try:
            sock.send(self._request(i))
        except OSError as exc:
            self._attempt_failed(i, f"request: {exc}")
            return
        self.state[i] = _REQUESTED
        self._poller(i).modify(fd, select.EPOLLIN)

    def _read_head(self, i: int, fd: int) -> None:
        sock = self.socks[i]
        assert sock is not None
        error = "closed before the response head"
        ancillary: list[tuple[int, int, bytes]] = []
        try:
            data, ancillary, _flags, _address = sock.recvmsg(65536, _STAMP_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            data, error = b"", str(exc)
        now = time.time_ns()
        if not data:
            self._attempt_failed(i, error)
            return
        data = self.tails[i] + data
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self.tails[i] = data
            return
        self.tails[i] = b""
        status = data[: data.find(b"\r\n")]
        if status.split(b" ", 2)[1:2] != [b"200"]:
            self._attempt_failed(i, status.decode("latin-1"), retry=False)
            return
        self.state[i] = _OPEN
        self.in_flight -= 1
        wave = self.wave
        assert wave is not None
        wave.opened += 1
        wave.latencies_ns.append(now - self.started[i])
        wave.finished_ns = now
        body = data[end + 4 :]
        if body:
            self._consume(i, body, now, arrival(ancillary, now))

    def _attempt_failed(self, i: int, error: str, retry: bool = True) -> None:
        """A connect attempt ended without an open stream: try again or give up."""
        self._drop(i)
        self.in_flight -= 1
        wave = self.wave
        assert wave is not None
        if retry and self.attempts[i] < _CONNECT_ATTEMPTS:
            wave.retried += 1
            self.state[i] = _IDLE
            self.pending.append(i)
            return
        self.state[i] = _FAILED
        wave.failed += 1
        wave.finished_ns = max(wave.finished_ns, time.time_ns())
        if len(wave.errors) < 5:
            wave.errors.append(error)

    def _finish_wave(self) -> None:
        wave = self.wave
        assert wave is not None
        self.wave = None
        self.control.send(("wave", wave))

    # --- reading --------------------------------------------------------------------

    def _read(self, i: int, fd: int) -> None:
        sock = self.socks[i]
        assert sock is not None
        try:
            size, ancillary, _flags, _address = sock.recvmsg_into(self.buffers, _STAMP_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            size = 0
        if not size:
            self.closed_by_server += 1
            self._drop(i)
            self.state[i] = _FAILED
            return
        now = time.time_ns()
        self._consume(i, bytes(self.view[:size]), now, arrival(ancillary, now))

    def _consume(self, i: int, data: bytes, now: int, arrived: int) -> None:
        """Account for every complete frame in ``data`` (plus what was left over).

        ``now`` is when the read returned, ``arrived`` the arrival timestamp
        of the latest segment it took.
        """
        tail = self.tails[i]
        if tail:
            data = tail + data
        end = data.rfind(self.separator)
        if end < 0:
            self.tails[i] = data if len(data) < _MAX_TAIL else b""
            return
        cut = end + len(self.separator)
        if cut < len(data):
            self.tails[i] = data[cut:]
            data = data[:cut]
        elif tail:
            self.tails[i] = b""
        if self.track_ids:
            self._track_ids(i, data)
        pairs = PAYLOAD.findall(data)
        if not pairs:
            return
        count = len(pairs)
        self.deliveries += count
        self.reads += 1
        self.progress_ns = now
        if count == 1:
            self._one(i, pairs[0], now, arrived)
        else:
            self._several(i, pairs, now, arrived)
        final = self.final
        if final is not None and not self.done[i] and self.next_seq[i] > final[i]:
            self.done[i] = True
            self.done_count += 1
            if self.done_count == self.n:
                self.completed_ns = now

    def _one(self, i: int, pair: tuple[bytes, bytes], now: int, arrived: int) -> None:
        """A read with one frame (the usual case while the reader keeps up)."""
        seq, sent = int(pair[0]), int(pair[1])
        latency = arrived - sent
        self.latencies.append(latency)
        self.read_latencies.append(now - sent)
        if self.probe[i]:
            self.probe_reads += 1
            self.samples.append((self.topic[i], seq, latency))
        if seq == self.next_seq[i]:
            self.next_seq[i] = seq + 1
        else:
            self._irregular(i, [seq])

    def _several(self, i: int, pairs: list[tuple[bytes, bytes]], now: int, arrived: int) -> None:
        sents = [int(sent) for _, sent in pairs]
        latencies = [arrived - sent for sent in sents]
        self.latencies.extend(latencies)
        self.read_latencies.extend([now - sent for sent in sents])
        seqs = [int(seq) for seq, _ in pairs]
        if self.probe[i]:
            self.probe_reads += 1
            topic = self.topic[i]
            self.samples.extend(
                [(topic, seq, lat) for seq, lat in zip(seqs, latencies, strict=True)]
            )
        expected = self.next_seq[i]
        count = len(seqs)
        if seqs[0] == expected and seqs == list(range(expected, expected + count)):
            self.next_seq[i] = expected + count
        else:
            self._irregular(i, seqs)

    def _irregular(self, i: int, seqs: list[int]) -> None:
        """The slow path: a gap, a duplicate or a late message in this chunk."""
        expected = self.next_seq[i]
        missing = self.missing[i]
        for seq in seqs:
            if seq == expected:
                expected += 1
            elif seq > expected:
                if missing is None:
                    missing = self.missing[i] = set()
                missing.update(range(expected, seq))
                expected = seq + 1
            elif missing and seq in missing:
                missing.discard(seq)
                self.out_of_order += 1
            else:
                self.duplicated += 1
        self.next_seq[i] = expected

    def _track_ids(self, i: int, data: bytes) -> None:
        """Remember the stream's last event id (and consumer id) for a resume."""
        at = data.rfind(b"\nid: ")
        start = at + 5 if at >= 0 else (4 if data.startswith(b"id: ") else -1)
        if start >= 0:
            self.last_ids[i] = data[start : data.find(b"\n", start)]
        if self.consumer_ids[i] is None and self.cid_pattern is not None:
            found = self.cid_pattern.search(data)
            if found:
                self.consumer_ids[i] = found.group(1).decode()

    # --- completion and shutdown --------------------------------------------------

    def _check_done(self) -> None:
        idle = time.time_ns() - max(self.progress_ns, self.expect_ns)
        if self.done_count < self.n and idle < self.idle_timeout_ns:
            return
        final = self.final
        assert final is not None
        stats = DeliveryStats(
            streams=self.n,
            deliveries=self.deliveries,
            reads=self.reads,
            duplicated=self.duplicated,
            out_of_order=self.out_of_order,
            complete_streams=self.done_count,
            closed_by_server=self.closed_by_server,
            completed_ns=self.completed_ns or self.progress_ns,
            latencies_ns=self.latencies,
            read_latencies_ns=self.read_latencies,
            probe_reads=self.probe_reads,
            samples=self.samples,
        )
        for i in range(self.n):
            missing = self.missing[i]
            stats.lost += (len(missing) if missing else 0) + max(0, final[i] + 1 - self.next_seq[i])
        self.final = None
        self.control.send(("delivered", stats))
        self.latencies = array("q")
        self.read_latencies = array("q")
        self.probe_reads = 0
        self.samples = []

    def _drop(self, i: int) -> None:
        sock = self.socks[i]
        if sock is not None:
            self.by_fd.pop(sock.fileno(), None)
            sock.close()  # closing the last reference also leaves the epoll set
            self.socks[i] = None
        self.tails[i] = b""

    def _drop_all(self) -> None:
        """The reconnect storm: every open stream goes away at once."""
        for i in range(self.n):
            if self.state[i] == _OPEN:
                self._drop(i)
                self.state[i] = _IDLE


def probes(topics: list[int]) -> list[bool]:
    """Which streams (reading ``topics[i]``, opened in this order) are probes.

    Every :data:`PROBE_EVERY`-th stream of each topic, in the order they join
    it, starting further along for each topic: every topic has probes when it
    has that many streams, and they sit all along the topics' fan-outs. (Every
    tenth stream overall would, with stream ``i`` on topic ``i % 100``, probe
    only every tenth topic, and those topics' streams only.)
    """
    joined: dict[int, int] = {}
    chosen = []
    for topic in topics:
        rank = joined.get(topic, 0)
        joined[topic] = rank + 1
        chosen.append((rank + topic) % PROBE_EVERY == 0)
    return chosen


def _worker_main(plan: WorkerPlan, control: Connection) -> None:
    if plan.cpu is not None:
        os.sched_setaffinity(0, {plan.cpu})
    worker = _Worker(plan, control)
    control.send(("ready",))
    worker.run()


def arrival(ancillary: list[tuple[int, int, bytes]], default: int) -> int:
    """The receive timestamp in a read's ancillary data (ns), or ``default``."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
            seconds = int.from_bytes(data[:8], sys.byteorder, signed=True)
            return seconds * 1_000_000_000 + int.from_bytes(data[8:16], sys.byteorder)
    return default


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def core_times(cpu: int) -> tuple[float, float]:
    """(busy, softirq) seconds of one core since boot, from /proc/stat.

    Busy is the time since boot less the core's idle time, which a tickless
    kernel measures exactly. The per-mode columns (user, system, softirq...)
    are counted in timer ticks, and a steady rhythm aliases them: during (c), a
    message every millisecond against a 4 ms tick, core 0's ticks added up to
    0.02 s busy over 3 s in which the server alone ran 0.57 s on it.
    """
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(v) for v in line.split()[1:]]
                tick = os.sysconf("SC_CLK_TCK")
                idle = (ticks[3] + ticks[4]) / tick  # idle + iowait
                return time.clock_gettime(time.CLOCK_BOOTTIME) - idle, ticks[6] / tick
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def sum_cpu_times(pids: list[int]) -> tuple[float, float]:
    times = [cpu_times(pid) for pid in pids]
    return sum(t[0] for t in times), sum(t[1] for t in times)


class LoadGenerator:
    """The orchestrator's handle on the worker processes.

    Args:
        protocol: how the server under test opens, resumes and frames streams.
        ports: the server's stream ports; stream ``i`` uses ``ports[i % len]``.
        topics: topic names; stream ``i`` reads ``topics[i % len(topics)]``.
        streams: how many streams to hold.
        per_process: at most this many streams per worker process (open files).
        window: connects in flight at once, per worker.
        cpu: the core every worker is pinned to.
        sources: source addresses, used in turn (ephemeral ports per address).
        resumable: track event ids so that :meth:`storm` can resume streams.
    """

    def __init__(
        self,
        protocol: StreamProtocol,
        ports: list[int],
        topics: list[str],
        streams: int,
        *,
        per_process: int,
        window: int = 64,
        cpu: int | None = None,
        sources: list[str] | None = None,
        resumable: bool = False,
    ) -> None:
        self.streams = streams
        workers = max(1, math.ceil(streams / per_process))
        sources = sources or [f"127.0.0.{n}" for n in range(2, 10)]
        plans = [
            WorkerPlan(
                protocol=protocol,
                host="127.0.0.1",
                ports=ports,
                streams=[(i % len(topics), i % len(ports)) for i in range(w, streams, workers)],
                topic_names=topics,
                sources=sources,
                window=window,
                cpu=cpu,
                resumable=resumable,
            )
            for w in range(workers)
        ]
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for plan in plans:
            ours, theirs = ctx.Pipe()
            process = ctx.Process(target=_worker_main, args=(plan, theirs), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)
        for pipe in self.pipes:
            self._expect(pipe, "ready", 60)

    @staticmethod
    def _expect(pipe: Connection, name: str, timeout: float) -> Any:
        if not pipe.poll(timeout):
            raise TimeoutError(f"load generator: no {name!r} within {timeout:.0f}s")
        message = pipe.recv()
        if message[0] != name:
            raise RuntimeError(f"load generator: expected {name!r}, got {message[0]!r}")
        return message[1] if len(message) > 1 else None

    def _wave(self, command: str, timeout: float) -> ConnectStats:
        for pipe in self.pipes:
            pipe.send((command,))
        total = ConnectStats()
        for pipe in self.pipes:
            total.merge(self._expect(pipe, "wave", timeout))
        return total

    def connect(self, timeout: float = 120) -> ConnectStats:
        """Open every stream; returns once each is open (or has failed)."""
        return self._wave("connect", timeout)

    def storm(self, timeout: float = 120) -> ConnectStats:
        """Drop every stream at once and reconnect it, resuming where it stopped."""
        return self._wave("storm", timeout)

    def expect(self, finals: list[int], idle_timeout: float, timeout: float) -> DeliveryStats:
        """Wait until every stream has its topic's messages up to ``finals[topic]``.

        Gives up once nothing arrived for ``idle_timeout`` seconds; whatever is
        missing then counts as lost.
        """
        for pipe in self.pipes:
            pipe.send(("expect", finals, idle_timeout))
        total = DeliveryStats()
        for pipe in self.pipes:
            total.merge(self._expect(pipe, "delivered", timeout))
        return total

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds over every worker process."""
        return sum_cpu_times([p.pid for p in self.processes if p.is_alive()])

    def close(self) -> None:
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            if process.is_alive():
                try:
                    pipe.send(("close",))
                    self._expect(pipe, "closed", 30)
                except (OSError, EOFError, TimeoutError, RuntimeError):
                    pass
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
