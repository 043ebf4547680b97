"""Capped, jittered exponential backoff: the one reconnect policy of the agent."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """``next()`` gives the delay before the next attempt; ``reset()`` after success.

    Full jitter in [delay/2, delay] spreads a fleet of gateways that lost the
    same broker, so they do not reconnect in lock-step.
    """

    def __init__(self, initial: float = 1.0, cap: float = 60.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self._delay = initial

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self.cap, self._delay * self.factor)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._delay = self.initial
