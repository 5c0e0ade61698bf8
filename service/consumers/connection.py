"""One open SSE connection: the socket side of a stream.

Topic frames are written straight to the socket while the IOStream has nothing
queued, and fall back to the IOStream's buffer when the kernel buffer is full.
No coroutine, queue or future is created per delivery on the fast path.

A reader that falls behind by more than ``max_write_buffer`` unsent bytes is
disconnected at once (slow-reader policy): nothing waits for it, so it never
delays other streams. Its consumer keeps buffering, and the client resumes with
``Last-Event-ID`` on reconnect.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from tornado import gen
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError

from service import sse
from service.log import get_logger

log = get_logger("unifrost.stream")

# A browser sends nothing after its request; a client that does is cut off
# rather than buffered.
_MAX_INBOUND = 64 * 1024
# How long a closing frame may take to drain before the socket is dropped.
_CLOSE_GRACE = 5.0


class SseConnection:
    """The write side of one ``GET /events`` stream, detached from Tornado's HTTP layer."""

    def __init__(
        self,
        iostream: IOStream,
        max_write_buffer: int,
        on_close: Callable[[SseConnection, str], None],
    ) -> None:
        self.iostream = iostream
        self._socket: socket.socket = iostream.socket
        self.max_write_buffer = max_write_buffer
        self._on_close = on_close
        self.opened_at = time.monotonic()
        self.closed = False
        self.close_reason = ""
        self.messages = 0
        self.bytes = 0
        self._quiet_sweeps = 0
        iostream.max_buffer_size = _MAX_INBOUND
        iostream.set_close_callback(self._closed_by_peer)
        # Reading keeps the socket watched so a client hang-up is seen promptly.
        gen.convert_yielded(iostream.read_until_close()).add_done_callback(lambda f: f.exception())

    # --- writing ----------------------------------------------------------------

    def _write(self, data: bytes) -> bool:
        if self.closed:
            return False
        stream = self.iostream
        if not stream.writing():
            try:
                sent = self._socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close("client")
                return False
            if sent == len(data):
                self._quiet_sweeps = 0
                return True
            data = data[sent:]
        try:
            stream.write(data)
        except StreamBufferFullError:
            self.close("slow_reader")
            return False
        except StreamClosedError:
            self.close("client")
            return False
        self._quiet_sweeps = 0
        return True

    def send(self, data: bytes) -> bool:
        """Write one topic frame (hot path)."""
        if self._write(data):
            self.messages += 1
            self.bytes += len(data)
            return True
        return False

    def send_control(self, frame: bytes) -> None:
        self._write(frame)

    def send_initial(self, data: bytes, replayed: int, replay_bytes: int) -> None:
        """Headers, retry, info and replay in one write, before the slow-reader cap applies.

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
        if self._quiet_sweeps >= 2:
            self._write(sse.HEARTBEAT)

    # --- closing ------------------------------------------------------------------

    def close(self, reason: str, frame: bytes | None = None) -> None:
        """End the stream, flushing ``frame`` first when given."""
        if self.closed:
            return
        if frame is not None and reason != "slow_reader":
            # The farewell is small and final: it may exceed the slow-reader cap.
            self.iostream.max_write_buffer_size = None
            self._write(frame)
            if self.closed:  # the peer was already gone
                return
        self.closed = True
        self.close_reason = reason
        stream = self.iostream
        stream.set_close_callback(None)
        if stream.writing() and reason != "slow_reader":
            # Let queued bytes (the closing frame) drain, then hang up.
            stream.write(b"").add_done_callback(lambda _f: stream.close())
            # A reader that never drains must not keep the socket forever.
            IOLoop.current().call_later(_CLOSE_GRACE, stream.close)
        else:
            stream.close()
        self._on_close(self, reason)

    def _closed_by_peer(self) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = "client"
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
