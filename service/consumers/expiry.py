"""TTL eviction: one loop timer for every consumer waiting out its TTL.

Every consumer of a manager has the same TTL, so deadlines come in the order
their clocks were started: a queue in arming order is also in deadline order.
Starting or stopping a clock is then a dict insert or delete, where a loop
timer per consumer would cost a timer object and a heap push to arm and a
cancellation to disarm. A wave of 10,000 hang-ups or reconnects is the case
that pays: each stream's close starts its consumer's clock and each resume
stops it. One timer waits for the head of the queue.

Expiry may run up to :data:`COALESCE` late, so that consumers whose deadlines
lie a few milliseconds apart (a hang-up wave) expire in one timer call rather
than one each. It is never early.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")

#: The most an expiry may be late, gathering deadlines that are close together.
COALESCE = 0.01


class ExpiryQueue(Generic[K]):
    """Calls ``on_expire(key)`` ``ttl`` seconds after :meth:`arm` unless :meth:`disarm` came first.

    Deadlines are on the event loop's monotonic clock. Only for the loop's thread.
    """

    def __init__(self, ttl: float, on_expire: Callable[[K], None]) -> None:
        self.ttl = ttl
        self._on_expire = on_expire
        #: key -> deadline, oldest first (so earliest deadline first).
        self._deadlines: OrderedDict[K, float] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        # Found on the first arm and kept: asyncio.get_running_loop() costs a
        # getpid() system call on Python 3.11, once per arm would show in a wave.
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._deadlines)

    def __contains__(self, key: K) -> bool:
        return key in self._deadlines

    def arm(self, key: K) -> None:
        """(Re)start ``key``'s clock: it expires ``ttl`` seconds from now."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ttl
        deadlines = self._deadlines
        deadlines.pop(key, None)  # a restarted clock moves to the back
        deadlines[key] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)

    def disarm(self, key: K) -> None:
        """Stop ``key``'s clock, if it runs."""
        # The timer may now wait for a deadline nobody has; it then finds
        # nothing due and waits for the new head.
        self._deadlines.pop(key, None)

    def close(self) -> None:
        """Stop every clock."""
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None  # the timer was set on it
        now = loop.time()
        deadlines = self._deadlines
        due: list[K] = []
        while deadlines:
            key = next(iter(deadlines))
            if deadlines[key] > now:
                break
            del deadlines[key]
            due.append(key)
        if deadlines:
            head = deadlines[next(iter(deadlines))]
            self._timer = loop.call_at(max(head, now + COALESCE), self._expire)
        # The queue is consistent before any callback runs: one may arm or disarm.
        for key in due:
            self._on_expire(key)
