"""The load generator's accounting: what it reports as lost, duplicated or late is so.

Frames are handed to a worker as its sockets would deliver them (cut anywhere,
several per read), without a server: the counts behind every "0/0/0" of the
benchmark table come from here.
"""

from __future__ import annotations

import multiprocessing
import socket
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from bench.loadgen import (
    _BATCH,
    _SO_TIMESTAMPNS,
    _STAMP_SPACE,
    PROBE_EVERY,
    DeliveryStats,
    StreamProtocol,
    WorkerPlan,
    _Worker,
    arrival,
    probes,
)

UNIFROST = StreamProtocol(path="/events?topics={topic}")


def frame(seq: int, sent_ns: int) -> bytes:
    return b'id: %d\nevent: message\ndata: ["t","%d:%d:......"]\n\n' % (seq, seq, sent_ns)


@pytest.fixture
def worker() -> Iterator[tuple[_Worker, Connection]]:
    ours, theirs = multiprocessing.Pipe()
    plan = WorkerPlan(
        protocol=UNIFROST,
        host="127.0.0.1",
        ports=[1],
        streams=[(0, 0)],
        topic_names=["t"],
        sources=["127.0.0.2"],
        window=1,
        cpu=None,
        resumable=False,
    )
    yield _Worker(plan, theirs), ours
    ours.close()
    theirs.close()


def feed(worker: _Worker, data: bytes, pieces: int = 1) -> None:
    """``data`` as ``pieces`` reads of about equal size, cut mid-frame."""
    size = -(-len(data) // pieces)
    for start in range(0, len(data), size):
        now = time.time_ns()
        worker._consume(0, data[start : start + size], now, now)


def finish(worker: _Worker, pipe: Connection, final: int) -> DeliveryStats:
    worker._command(("expect", [final], 0.0))
    worker._check_done()
    kind, stats = pipe.recv()
    assert kind == "delivered"
    assert isinstance(stats, DeliveryStats)
    return stats


def test_in_order_frames_cut_anywhere_are_all_counted(worker: tuple[_Worker, Connection]) -> None:
    w, pipe = worker
    sent = time.time_ns()
    feed(w, b"".join(frame(seq, sent) for seq in range(1, 101)), pieces=37)
    stats = finish(w, pipe, 100)
    assert (stats.deliveries, stats.lost, stats.duplicated, stats.out_of_order) == (100, 0, 0, 0)
    assert stats.complete_streams == 1
    assert len(stats.latencies_ns) == 100
    assert all(0 <= latency < 60 * 10**9 for latency in stats.latencies_ns)


def test_gaps_duplicates_and_late_frames_are_told_apart(worker: tuple[_Worker, Connection]) -> None:
    w, pipe = worker
    sent = time.time_ns()
    for seq in (1, 2, 4, 2, 3, 6, 7, 7):  # 5 never comes, 3 comes late, 2 and 7 twice
        feed(w, frame(seq, sent))
    stats = finish(w, pipe, 8)  # and 8, the last, never comes either
    assert stats.deliveries == 8
    assert (stats.lost, stats.duplicated, stats.out_of_order) == (2, 2, 1)
    assert stats.complete_streams == 0


def test_a_partial_frame_is_not_counted_until_it_is_whole(
    worker: tuple[_Worker, Connection],
) -> None:
    w, _pipe = worker
    whole = frame(1, time.time_ns())
    feed(w, whole[:-1])
    assert w.deliveries == 0
    feed(w, whole[-1:])
    assert w.deliveries == 1


def test_latency_runs_to_arrival_and_read_latency_to_the_read(
    worker: tuple[_Worker, Connection],
) -> None:
    w, pipe = worker
    sent = time.time_ns()
    arrived, read = sent + 2_000_000, sent + 50_000_000
    w._consume(0, frame(1, sent) + frame(2, sent), read, arrived)
    stats = finish(w, pipe, 2)
    assert list(stats.latencies_ns) == [2_000_000, 2_000_000]
    assert list(stats.read_latencies_ns) == [50_000_000, 50_000_000]
    assert (stats.deliveries, stats.reads) == (2, 1)  # two frames in one read


def test_the_arrival_is_the_kernels_receive_time_not_the_reads() -> None:
    """Over real loopback TCP: a frame read 50 ms after it was sent arrived at once."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        client.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        peer, _ = server.accept()
        with client, peer:
            wait_for_receive_timestamps(peer, client)
            before = time.time_ns()
            peer.sendall(b"first")
            time.sleep(0.05)
            data, ancillary, _flags, _address = client.recvmsg(64, _STAMP_SPACE)
            read = time.time_ns()
            stamp = arrival(ancillary, read)
            assert data == b"first"
            assert before <= stamp < before + 20_000_000 < read
            # A read that takes two segments carries the later one's time.
            peer.sendall(b"second")
            time.sleep(0.03)
            middle = time.time_ns()
            peer.sendall(b"third")
            time.sleep(0.01)
            _data, ancillary, _flags, _address = client.recvmsg(64, _STAMP_SPACE)
            assert arrival(ancillary, 0) >= middle


def wait_for_receive_timestamps(sender: socket.socket, receiver: socket.socket) -> None:
    """The kernel turns receive timestamps on shortly after the first socket asks for
    them (deferred work); segments before that arrive without one."""
    for _ in range(200):
        sender.sendall(b".")
        _data, ancillary, _flags, _address = receiver.recvmsg(64, _STAMP_SPACE)
        if arrival(ancillary, -1) != -1:
            return
        time.sleep(0.01)
    raise AssertionError("no receive timestamps after 2 s")


def test_a_read_without_a_timestamp_counts_as_arriving_when_read() -> None:
    assert arrival([], 123) == 123


def test_probe_streams_keep_their_own_latencies(worker: tuple[_Worker, Connection]) -> None:
    w, pipe = worker  # one stream: stream 0, a probe
    sent = time.time_ns()
    w._consume(0, frame(1, sent), sent + 5_000_000, sent + 1_000_000)
    w._consume(0, frame(2, sent) + frame(3, sent), sent + 5_000_000, sent + 3_000_000)
    stats = finish(w, pipe, 3)
    assert [latency for *_, latency in stats.samples] == [1_000_000, 3_000_000, 3_000_000]
    assert stats.probe_reads == 2
    assert [(seq, latency) for _topic, seq, latency in stats.samples] == [
        (1, 1_000_000),
        (2, 3_000_000),
        (3, 3_000_000),
    ]


def test_probes_are_read_before_the_backlog_of_the_other_streams() -> None:
    """Over real loopback TCP: with a frame waiting on every one of 3 batches' worth
    of streams, one turn of the loop reads one batch of them and every probe."""
    streams = 3 * _BATCH
    ours, theirs = multiprocessing.Pipe()
    plan = WorkerPlan(
        protocol=UNIFROST,
        host="127.0.0.1",
        ports=[0],
        streams=[(0, 0)] * streams,
        topic_names=["t"],
        sources=["127.0.0.2"],
        window=64,
        cpu=None,
        resumable=False,
    )
    with socket.create_server(("127.0.0.1", 0), backlog=streams) as server:
        server.setblocking(False)
        plan.ports[0] = server.getsockname()[1]
        w = _Worker(plan, theirs)
        peers = open_streams(w, server)
        try:
            sent = time.time_ns()
            for peer in peers:
                peer.sendall(frame(1, sent))
            time.sleep(0.2)  # every frame is in its socket
            w.turn(0)
            probe_count = sum(w.probe)
            assert len(w.samples) == probe_count == -(-streams // PROBE_EVERY)
            # The rest waits for later turns: at most one batch was read.
            assert w.deliveries - probe_count <= _BATCH < streams - probe_count
        finally:
            for peer in peers:
                peer.close()
            for sock in w.socks:
                if sock is not None:
                    sock.close()
            ours.close()
            theirs.close()


def open_streams(w: _Worker, server: socket.socket) -> list[socket.socket]:
    """Run ``w``'s connect wave against ``server``; the server's end of each stream,
    in the worker's stream order."""
    w._command(("connect",))
    accepted: dict[tuple[str, int], socket.socket] = {}
    deadline = time.monotonic() + 30
    while w.wave is not None:
        assert time.monotonic() < deadline, "the connect wave did not finish"
        w.turn(0.01)
        while True:
            try:
                peer, address = server.accept()
            except BlockingIOError:
                break
            peer.setblocking(True)
            peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
            accepted[address] = peer
    peers = []
    for sock in w.socks:
        assert sock is not None
        peers.append(accepted.pop(sock.getsockname()))
    return peers


def test_probes_cover_every_topic_and_every_place_in_a_fan_out() -> None:
    # (c): 1,000 streams, stream i on topic i % 100: one probe per topic, at
    # every one of the ten places in the topics' fan-outs.
    topics = [i % 100 for i in range(1_000)]
    chosen = probes(topics)
    assert sum(chosen) == 100
    assert {topics[i] for i in range(1_000) if chosen[i]} == set(range(100))
    assert {i // 100 for i in range(1_000) if chosen[i]} == set(range(10))
    # (a): one topic, every tenth stream.
    assert probes([0] * 1_000) == [i % PROBE_EVERY == 0 for i in range(1_000)]
