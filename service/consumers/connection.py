"""One open SSE connection: the socket side of a stream (the end of the hot path).

Frames handed to a connection are queued on it and written once per IOLoop
iteration by the :class:`WriteBatcher`: a burst of messages costs one ``send``
per stream, not one per message. A message published in-process
(:meth:`WriteBatcher.write_through`) is written to each socket as it is fanned
out instead, since nothing else can join it in that iteration. No coroutine,
queue or future is created per delivery.

From its response on, a stream's socket belongs to its :class:`SseConnection`
alone: it watches the socket for the client's hang-up itself and keeps its own
backlog of unsent bytes (as asyncio's socket transports do), instead of an
IOStream's reads, futures and buffers, which cost about a tenth of a stream's
opening, a fifth of its hang-up and half of an idle stream's memory. Bytes go
straight to the socket while nothing is backlogged, and to the backlog only
when the kernel buffer is full.

A reader that falls behind by more than ``max_write_buffer`` unsent bytes is
disconnected at once (slow-reader policy): nothing waits for it, so it never
delays other streams. Its consumer keeps buffering, and the client resumes with
``Last-Event-ID`` on reconnect.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from service import sse

# A browser sends nothing after its request; a client that does is cut off
# rather than buffered.
_MAX_INBOUND = 64 * 1024
# How long a closing frame may take to drain before the socket is dropped.
_CLOSE_GRACE = 5.0
# The write cap while a stream says goodbye: the farewell is small and final.
_NO_CAP = sys.maxsize


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
    """The socket of one ``GET /events`` stream, detached from Tornado's HTTP layer."""

    __slots__ = (
        "_backlog",
        "_batcher",
        "_fd",
        "_grace",
        "_inbound",
        "_loop",
        "_on_close",
        "_pending",
        "_quiet_sweeps",
        "_reading",
        "_socket",
        "_write_cap",
        "bytes",
        "close_reason",
        "closed",
        "max_write_buffer",
        "messages",
        "opened_at",
    )

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        max_write_buffer: int,
        batcher: WriteBatcher,
        on_close: Callable[[SseConnection, str], None],
    ) -> None:
        self._socket = sock
        #: The socket's descriptor while this connection holds it; -1 once released.
        self._fd = sock.fileno()
        self._loop = loop
        self.max_write_buffer = max_write_buffer
        self._write_cap = max_write_buffer
        self._batcher = batcher
        self._on_close = on_close
        self.opened_at = time.monotonic()
        self.closed = False
        self.close_reason = ""
        self.messages = 0
        self.bytes = 0
        self._pending: list[bytes] = []
        # Bytes the kernel did not take yet; None while there are none (the usual case).
        self._backlog: bytearray | None = None
        self._inbound = 0
        self._quiet_sweeps = 0
        self._grace: asyncio.TimerHandle | None = None
        # The client sends nothing more; readability means it hung up (or misbehaves).
        # A socket the front hands over is registered already: this re-points it.
        loop.add_reader(self._fd, self._readable)
        self._reading = True

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
                if self._backlog is not None:
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
        backlog = self._backlog
        if backlog is None:
            try:
                sent = self._socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop()
                return False
            if sent == len(data):
                return True
            data = memoryview(data)[sent:]
            backlog = self._backlog = bytearray()
            self._loop.add_writer(self._fd, self._writable)
        if len(backlog) + len(data) > self._write_cap:
            self.close("slow_reader")
            return False
        backlog += data
        return True

    def _writable(self) -> None:
        """The kernel takes more: send the backlog (all of it, once the client reads)."""
        backlog = self._backlog
        if backlog is None:
            return
        try:
            sent = self._socket.send(backlog)
        except BlockingIOError:
            return
        except OSError:
            self._drop()
            return
        del backlog[:sent]
        if backlog:
            return
        self._backlog = None
        self._loop.remove_writer(self._fd)
        if self.closed:  # the closing frame is out: hang up
            self._release()
        else:
            self._write_cap = self.max_write_buffer  # an opening's allowance ends here

    def send_initial(self, data: bytes, replayed: int, replay_bytes: int) -> None:
        """Head, retry, info and replay in one write, before the slow-reader cap applies.

        Replay is bounded by the consumer buffer, so it may exceed
        ``max_write_buffer`` by that much without counting as a slow reader.
        """
        self._write_cap = self.max_write_buffer + len(data)
        self._write(data)
        self.messages += replayed
        self.bytes += replay_bytes
        if self._backlog is None:
            self._write_cap = self.max_write_buffer

    def heartbeat(self) -> None:
        """Called twice per heartbeat interval; writes a comment after a full idle interval.

        Two sweeps without a write mean at most one interval of silence.
        """
        self._quiet_sweeps += 1
        if self._quiet_sweeps >= 2 and not self._pending:
            self._write(sse.HEARTBEAT)

    # --- reading ------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = self._socket.recv(_MAX_INBOUND)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset: an ordinary hang-up here
            data = b""
        if data:
            self._inbound += len(data)
            if self._inbound <= _MAX_INBOUND:
                return
        self._drop()

    # --- closing ------------------------------------------------------------------

    def close(self, reason: str, frame: bytes | None = None) -> None:
        """End the stream, flushing what is queued and then ``frame`` when given."""
        if self.closed:
            return
        if reason != "slow_reader":
            self._write_cap = _NO_CAP
            if frame:
                self._pending.append(frame)
            self.flush()
            if self.closed:  # the peer was already gone
                return
        self._pending.clear()
        self.closed = True
        self.close_reason = reason
        if self._backlog is not None and reason != "slow_reader":
            # Let the backlog (the closing frame) drain, then hang up; a reader that
            # never drains must not keep the socket forever.
            self._stop_reading()
            self._grace = self._loop.call_later(_CLOSE_GRACE, self._release)
        else:
            self._release()
        self._on_close(self, reason)

    def _drop(self) -> None:
        """The client is gone (or cut off for sending): let go of the socket at once.

        Also when it goes while its farewell drains (the stream is closed already).
        """
        self._release()
        if not self.closed:
            self.closed = True
            self.close_reason = "client"
            self._pending.clear()
            self._on_close(self, "client")

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _release(self) -> None:
        """Unregister the socket and close it (once)."""
        fd = self._fd
        if fd < 0:
            return
        self._stop_reading()
        if self._backlog is not None:
            self._loop.remove_writer(fd)
            self._backlog = None
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._fd = -1
        self._socket.close()

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
