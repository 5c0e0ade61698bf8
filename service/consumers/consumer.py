"""A consumer: subscriptions, per-consumer event ids and the bounded replay buffer.

The buffer keeps every topic frame (shared ``bytes``, encoded once by the hub)
since the consumer was created, bounded by message count and bytes, oldest
dropped first. Event id ``n`` is the n-th message this consumer received, so a
frame's id is derived from its position and never stored.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any, Protocol

_CUSTOM_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
MAX_TOPIC_LENGTH = 256


def new_consumer_id() -> str:
    """A 192-bit random, URL-safe id (the id is the browser's read capability)."""
    return secrets.token_urlsafe(24)


def consumer_id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid custom consumer id, or None if it is."""
    if not isinstance(value, str) or not _CUSTOM_ID.fullmatch(value):
        return "consumer id must be 1-128 characters of [A-Za-z0-9._~-]"
    return None


def topic_problem(value: object) -> str | None:
    """Why ``value`` is not a valid topic, or None if it is."""
    if not isinstance(value, str):
        return "topic must be a string"
    if not 1 <= len(value) <= MAX_TOPIC_LENGTH:
        return f"topic must be 1-{MAX_TOPIC_LENGTH} characters"
    if value.isascii() and value.isprintable():
        return None  # the usual topic: neither control characters nor surrogates
    categories = {unicodedata.category(ch) for ch in value}
    if "Cc" in categories:
        return "topic must not contain control characters"
    if "Cs" in categories:  # a JSON body may spell one ("\ud800"); UTF-8 cannot carry it
        return "topic must not contain lone surrogates"
    return None


class StreamSink(Protocol):
    """What a consumer needs from its open SSE connection."""

    def send(self, data: bytes) -> bool:
        """Write a topic frame; False if the stream is gone (or just closed)."""

    def send_control(self, frame: bytes) -> None:
        """Write an info/error frame (no id, not counted as a message)."""

    def close(self, reason: str, frame: bytes | None = None) -> None:
        """End the stream, after writing ``frame`` if given."""

    def heartbeat(self) -> None:
        """Write a comment frame if nothing was written since the last call."""


class DropTally:
    """Messages lost to buffer overflow since the hub last read it.

    Shared by every consumer of a manager so the hub can count drops once per
    fan-out instead of once per consumer.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Consumer:
    """Server-side state of one consumer id."""

    __slots__ = (
        "_buffer_bytes",
        "_drops",
        "_first_id",
        "_frames",
        "closed",
        "created_at",
        "delivered_id",
        "disconnected_at",
        "dropped",
        "id",
        "last_id",
        "max_bytes",
        "max_messages",
        "stream",
        "topics",
    )

    def __init__(
        self, consumer_id: str, max_messages: int, max_bytes: int, drops: DropTally | None = None
    ) -> None:
        self.id = consumer_id
        self.topics: set[str] = set()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.created_at = time.time()
        self.disconnected_at: float | None = None
        self.stream: StreamSink | None = None
        self.closed = False
        #: Id of the newest message received (0 = none yet).
        self.last_id = 0
        #: Id of the newest message handed to a stream.
        self.delivered_id = 0
        #: Undelivered messages lost to the buffer bound, ever.
        self.dropped = 0
        self._frames: deque[bytes] = deque()
        self._first_id = 1  # id of _frames[0]; last_id + 1 when empty
        self._buffer_bytes = 0
        self._drops = drops if drops is not None else DropTally()

    # --- hot path: one call per consumer per broker message -------------------

    def push(self, frame: bytes) -> int:
        """Buffer ``frame`` and write it to the open stream, if any.

        Returns the bytes written to a stream (0 when none is open).
        """
        self.last_id = event_id = self.last_id + 1
        self._frames.append(frame)
        self._buffer_bytes += len(frame)
        written = 0
        stream = self.stream
        if stream is not None:
            data = b"id: %d\n%b" % (event_id, frame)
            if stream.send(data):
                self.delivered_id = event_id
                written = len(data)
        if len(self._frames) > self.max_messages or self._buffer_bytes > self.max_bytes:
            self._trim()
        return written

    def _trim(self) -> None:
        frames = self._frames
        lost = 0
        while frames and (len(frames) > self.max_messages or self._buffer_bytes > self.max_bytes):
            self._buffer_bytes -= len(frames.popleft())
            if self._first_id > self.delivered_id:
                lost += 1
            self._first_id += 1
        if lost:
            self.dropped += lost
            self._drops.count += lost

    # --- replay ---------------------------------------------------------------

    def replay_from(self, last_event_id: int | None) -> tuple[list[bytes], tuple[int, int] | None]:
        """Frames (with ``id:`` lines) a new stream must get first.

        ``last_event_id`` is what the client saw last; None means "whatever no
        stream has been sent yet". Returns the frames and, when some wanted
        messages were already dropped, ``(first_available_id, lost_count)``.
        """
        # An id beyond anything this consumer produced belongs to another consumer
        # (e.g. a custom id reused after eviction): treat it as no id at all.
        if last_event_id is None or last_event_id > self.last_id:
            after = self.delivered_id
        else:
            after = last_event_id
        wanted = after + 1
        gap = None
        if wanted < self._first_id:
            gap = (self._first_id, self._first_id - wanted)
            wanted = self._first_id
        skip = wanted - self._first_id
        frames = [
            b"id: %d\n%b" % (event_id, frame)
            for event_id, frame in enumerate(islice(self._frames, skip, None), wanted)
        ]
        return frames, gap

    @property
    def buffered(self) -> int:
        return len(self._frames)

    @property
    def buffered_bytes(self) -> int:
        return self._buffer_bytes

    def describe(self) -> dict[str, Any]:
        """The control API's view of this consumer."""
        return {
            "consumer_id": self.id,
            "connected": self.stream is not None,
            "subscriptions": sorted(self.topics),
            "buffered": len(self._frames),
            "buffered_bytes": self._buffer_bytes,
            "last_event_id": self.last_id,
            "delivered_event_id": self.delivered_id,
            "dropped": self.dropped,
            "created_at": self.created_at,
            "disconnected_at": self.disconnected_at,
        }


ConsumerCallback = Callable[[Consumer], None]
