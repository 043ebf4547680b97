"""Count bad input per reason; log each reason at most once a minute.

An instrument with a loose connector can send thousands of broken frames a
minute: every one is counted (``context.counters``, reported in metrics), but
the log gets one line per reason per interval saying how many there were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent.sdk.counters import DeviceCounters

__all__ = ["BadInput"]


class BadInput:
    __slots__ = ("_clock", "_counters", "_device", "_interval", "_log", "_next_log", "_since")

    def __init__(
        self,
        counters: DeviceCounters,
        log: logging.Logger,
        device: str,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counters = counters
        self._log = log
        self._device = device
        self._interval = interval
        self._clock = clock
        # Per reason: when the next log line is allowed, and how many were
        # seen since the last one.
        self._next_log: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def note(self, reason: str, detail: str = "", n: int = 1) -> None:
        self._counters.count(reason, n)
        self._since[reason] = self._since.get(reason, 0) + n
        now = self._clock()
        if now < self._next_log.get(reason, 0.0):
            return
        count = self._since.pop(reason)
        self._next_log[reason] = now + self._interval
        suffix = f": {detail}" if detail else ""
        self._log.warning(
            "device %s: bad input, %s x%d (logged at most once per %.0f s)%s",
            self._device, reason, count, self._interval, suffix,
            extra={"device": self._device},
        )
