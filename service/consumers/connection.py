"""One open SSE connection: the socket side of a stream (the end of the hot path).

Frames handed to a connection are queued on it and written once per IOLoop
iteration by the :class:`WriteBatcher`: a burst of messages costs one ``send``
per stream, not one per message. A message published in-process
(:meth:`WriteBatcher.write_through`) is written to each socket as it is fanned
out instead, since nothing else can join it in that iteration. Bytes go straight
to the socket while nothing is backlogged, and to the IOStream's buffer only
when the kernel buffer is full. No coroutine, queue or future is created per
delivery.

A reader that falls behind by more than ``max_write_buffer`` unsent bytes is
disconnected at once (slow-reader policy): nothing waits for it, so it never
delays other streams. Its consumer keeps buffering, and the client resumes with
``Last-Event-ID`` on reconnect.
"""

from __future__ import annotations

import asyncio
import socket
import time
from asyncio import Future
from collections.abc import Callable
from typing import Any

from tornado import gen
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError

from service import sse

# A browser sends nothing after its request; a client that does is cut off
# rather than buffered.
_MAX_INBOUND = 64 * 1024
# How long a closing frame may take to drain before the socket is dropped.
_CLOSE_GRACE = 5.0


class WriteBatcher:
    """Connections with frames queued in this IOLoop iteration, flushed together.

    The flush runs as the next loop callback, after every message that arrived
    in the same iteration has been fanned out.
    """

    __slots__ = ("_dirty", "writing_through")

    def __init__(self) -> None:
        self._dirty: list[SseConnection] = []
        #: Inside :meth:`write_through`: connections write their frames at once.
        self.writing_through = False

    def mark(self, conn: SseConnection) -> None:
        """``conn`` has just queued its first frame of this iteration."""
        if not self._dirty and not self.writing_through:
            asyncio.get_running_loop().call_soon(self._flush)
        self._dirty.append(conn)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    def flush_now(self) -> None:
        """Write what is queued without waiting for the next loop iteration."""
        if self._dirty:
            self._flush()  # the already scheduled call then finds nothing to do

    def write_through(self, fan_out: Callable[[str, bytes], bool], topic: str, body: bytes) -> bool:
        """``fan_out(topic, body)`` with every frame written as it is sent, before returning.

        For a message published in-process (``POST /publish`` on the memory
        broker), answered once its frames are in the sockets: nothing is left for
        the end of the iteration, and a flush scheduled there would only cost the
        loop an extra turn (one more ``epoll_wait``) per publish. A connection
        with frames already queued gets this one queued behind them, and all of
        them written on the way out.
        """
        self.writing_through = True
        try:
            return fan_out(topic, body)
        finally:
            self.writing_through = False
            self.flush_now()


class SseConnection:
    """The write side of one ``GET /events`` stream, detached from Tornado's HTTP layer."""

    __slots__ = (
        "_backlogged",
        "_batcher",
        "_on_close",
        "_pending",
        "_quiet_sweeps",
        "_socket",
        "bytes",
        "close_reason",
        "closed",
        "iostream",
        "max_write_buffer",
        "messages",
        "opened_at",
    )

    def __init__(
        self,
        iostream: IOStream,
        max_write_buffer: int,
        batcher: WriteBatcher,
        on_close: Callable[[SseConnection, str], None],
    ) -> None:
        self.iostream = iostream
        self._socket: socket.socket = iostream.socket
        self.max_write_buffer = max_write_buffer
        self._batcher = batcher
        self._on_close = on_close
        self.opened_at = time.monotonic()
        self.closed = False
        self.close_reason = ""
        self.messages = 0
        self.bytes = 0
        self._pending: list[bytes] = []
        # True while the IOStream holds unsent bytes: new bytes must queue behind them.
        self._backlogged = False
        self._quiet_sweeps = 0
        iostream.max_buffer_size = _MAX_INBOUND
        # The pending read watches the socket: it ends when the client hangs up.
        gen.convert_yielded(iostream.read_until_close()).add_done_callback(self._read_ended)

    # --- queueing (hot path) ----------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Queue one topic frame for this iteration's flush (or write it now, when the
        batcher writes through and nothing is queued before it)."""
        if self.closed:
            return False
        self.messages += 1
        self.bytes += len(data)
        if not self._pending:
            if self._batcher.writing_through:
                if self._backlogged:
                    return self._write(data)
                # The usual case, inlined (one call per delivery fewer): the socket takes it all.
                self._quiet_sweeps = 0
                try:
                    sent = self._socket.send(data)
                except OSError:  # full or gone: _write tells which and acts
                    return self._write(data)
                return sent == len(data) or self._write(memoryview(data)[sent:])
            self._batcher.mark(self)
        self._pending.append(data)
        return True

    def send_control(self, frame: bytes) -> None:
        """Queue an info/error frame (in order with topic frames, not counted)."""
        if self.closed:
            return
        if not self._pending:
            self._batcher.mark(self)
        self._pending.append(frame)

    def flush(self) -> None:
        """Write everything queued, as one socket write."""
        pending = self._pending
        if not pending or self.closed:
            pending.clear()
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._write(data)

    # --- writing ------------------------------------------------------------------

    def _write(self, data: bytes | memoryview) -> bool:
        if self.closed:
            return False
        self._quiet_sweeps = 0
        view: bytes | memoryview = data
        if not self._backlogged:
            try:
                sent = self._socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close("client")
                return False
            if sent == len(data):
                return True
            view = memoryview(data)[sent:]
        try:
            written = self.iostream.write(view)
        except StreamBufferFullError:
            self.close("slow_reader")
            return False
        except StreamClosedError:
            self.close("client")
            return False
        self._backlogged = True
        written.add_done_callback(self._maybe_drained)
        return True

    def _maybe_drained(self, _future: object) -> None:
        if not self.iostream.writing():
            self._backlogged = False

    def send_initial(self, data: bytes, replayed: int, replay_bytes: int) -> None:
        """Head, retry, info and replay in one write, before the slow-reader cap applies.

        Replay is bounded by the consumer buffer, so it may exceed
        ``max_write_buffer`` by that much without counting as a slow reader.
        """
        stream = self.iostream
        stream.max_write_buffer_size = self.max_write_buffer + len(data)
        self._write(data)
        self.messages += replayed
        self.bytes += replay_bytes
        if stream.writing():
            # Back to the plain cap once the opening burst has left the buffer.
            stream.write(b"").add_done_callback(self._restore_write_cap)
        else:
            stream.max_write_buffer_size = self.max_write_buffer

    def _restore_write_cap(self, _future: object) -> None:
        self.iostream.max_write_buffer_size = self.max_write_buffer

    def heartbeat(self) -> None:
        """Called twice per heartbeat interval; writes a comment after a full idle interval.

        Two sweeps without a write mean at most one interval of silence.
        """
        self._quiet_sweeps += 1
        if self._quiet_sweeps >= 2 and not self._pending:
            self._write(sse.HEARTBEAT)

    # --- closing ------------------------------------------------------------------

    def close(self, reason: str, frame: bytes | None = None) -> None:
        """End the stream, flushing what is queued and then ``frame`` when given."""
        if self.closed:
            return
        if reason != "slow_reader":
            # The farewell is small and final: it may exceed the slow-reader cap.
            self.iostream.max_write_buffer_size = None
            if frame:
                self._pending.append(frame)
            self.flush()
            if self.closed:  # the peer was already gone
                return
        self._pending.clear()
        self.closed = True
        self.close_reason = reason
        stream = self.iostream
        if stream.writing() and reason != "slow_reader":
            # Let queued bytes (the closing frame) drain, then hang up.
            stream.write(b"").add_done_callback(lambda _f: stream.close())
            # A reader that never drains must not keep the socket forever.
            IOLoop.current().call_later(_CLOSE_GRACE, stream.close)
        else:
            stream.close()
        self._on_close(self, reason)

    def _read_ended(self, reading: Future[bytes]) -> None:
        reading.exception()  # retrieved: a reset is an ordinary hang-up here
        self._closed_by_peer()

    def _closed_by_peer(self) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = "client"
            self._pending.clear()
            self._on_close(self, "client")

    @property
    def duration(self) -> float:
        return time.monotonic() - self.opened_at

    def as_log(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration, 3),
            "messages": self.messages,
            "bytes": self.bytes,
            "reason": self.close_reason,
        }
