"""Reconnect delays: exponential backoff with jitter.

Jitter keeps a fleet of instances from reconnecting in lock-step after a broker
restart.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays of ``initial * factor**n`` capped at ``maximum``, each scaled by a
    random factor in ``[1 - jitter, 1]``."""

    def __init__(
        self, initial: float = 0.25, maximum: float = 10.0, factor: float = 2.0, jitter: float = 0.5
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.attempt = 0

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return base * (1 - self.jitter * random.random())

    def reset(self) -> None:
        self.attempt = 0
