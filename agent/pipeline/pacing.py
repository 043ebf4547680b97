"""Publish pacing: token buckets for a broker's per-connection rate limits.

AWS IoT Core allows 100 publishes/s and 512 KB/s per connection and
throttles (or disconnects) beyond.  After an outage the backlog would burst
far past that, so every publish first takes tokens here; live data and
management messages go ahead of the backlog, so a long drain never makes
fresh readings wait more than one message's worth of tokens.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

__all__ = ["Pacer", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self._last = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def wait_for(self, n: float) -> float:
        """Seconds until ``n`` tokens are there (0 when they are now)."""
        self._refill()
        # A message bigger than the burst may go once the bucket is full.
        need = min(n, self.burst)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def take(self, n: float) -> None:
        self._refill()
        self.tokens -= n

    def try_take(self, n: float = 1.0) -> bool:
        """Take ``n`` tokens if they are there now (a rate limit that refuses)."""
        self._refill()
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


class Pacer:
    """Both limits of a connection; one publish at a time waits for tokens.

    Waiters are served by priority (live before backlog), then in arrival
    order, so each stream keeps its ``seq`` order.
    """

    LIVE = 0
    BACKLOG = 1

    def __init__(self, *, messages_per_s: float, bytes_per_s: float, max_message: int) -> None:
        # The cloud counts per second: the steady rate plus the burst must
        # stay within its limit in ANY one second.  So 95 % of the message
        # rate with a burst of the other 5 %, and for bytes a burst of one
        # largest message on top of a rate lowered by that much.
        self.messages = TokenBucket(messages_per_s * 0.95, max(1.0, messages_per_s * 0.05))
        burst = float(min(max_message, bytes_per_s / 2))
        self.bytes = TokenBucket(bytes_per_s - burst, burst)
        self._order = itertools.count()
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._busy = False
        self.waited = 0.0  # seconds spent waiting for tokens (metrics, benchmarks)

    def _next(self) -> None:
        while self._queue:
            _, _, fut = heapq.heappop(self._queue)
            if not fut.done():
                self._busy = True
                fut.set_result(None)
                return
        self._busy = False

    async def acquire(self, size: int, priority: int = LIVE) -> None:
        """Wait until one message of ``size`` bytes may be published."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._order), fut))
        if not self._busy:
            self._next()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._next()  # granted the turn just as we were cancelled: pass it on
            raise
        try:
            while (delay := max(self.messages.wait_for(1), self.bytes.wait_for(size))) > 0:
                self.waited += delay
                await asyncio.sleep(delay)
            self.messages.take(1)
            self.bytes.take(size)
        finally:
            self._next()
