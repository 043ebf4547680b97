"""Who may command: HMAC signatures, a time window, a replay cache, a rate limit.

The broker's ACL is the first gate; these checks are the second, for a site
whose broker is shared or whose credentials leak.  The signature is the
lowercase hex HMAC-SHA256 of the request without ``sig``, serialised with
sorted keys and no spaces (SPEC.md), so any language can produce it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import OrderedDict
from typing import Any

from agent.management.protocol import CommandError
from agent.pipeline.pacing import TokenBucket

__all__ = ["Guard", "ReplayCache", "canonical", "sign"]


def canonical(request: dict[str, Any]) -> bytes:
    """The bytes that are signed: the request without ``sig``, canonical JSON."""
    body = {k: v for k, v in request.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(request: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, canonical(request), hashlib.sha256).hexdigest()


class ReplayCache:
    """Ids of accepted signed commands, kept while their ``ts`` is in the window.

    An id can only be replayed while its timestamp is still accepted, so an
    entry may be forgotten once ``ts + window`` has passed: memory is bounded
    by the rate limit times the window.  ``capacity`` is a hard cap on top;
    when it is full of live entries new commands are refused rather than an
    entry forgotten early (forgetting would reopen a replay).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._expires: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expires)

    def _prune(self, now_ms: int) -> None:
        # Insertion order is arrival order, close to expiry order; a full sweep
        # only when the cap is hit catches entries that expired out of order.
        while self._expires and next(iter(self._expires.values())) < now_ms:
            self._expires.popitem(last=False)
        if len(self._expires) >= self.capacity:
            for rid in [r for r, exp in self._expires.items() if exp < now_ms]:
                del self._expires[rid]

    def seen(self, rid: str, now_ms: int) -> bool:
        self._prune(now_ms)
        return rid in self._expires

    def add(self, rid: str, expires_ms: int, now_ms: int) -> None:
        self._prune(now_ms)
        if len(self._expires) >= self.capacity:
            raise CommandError("refused: too many recent commands to check for replays; retry later")
        self._expires[rid] = expires_ms


class Guard:
    """Checks one request before its handler runs; raises CommandError to refuse."""

    def __init__(self, *, key: bytes | None, window_s: float, rate: float,
                 clock_ms: Any = None) -> None:
        self.key = key
        self.window_ms = int(window_s * 1000)
        self.bucket = TokenBucket(rate, max(1.0, 2 * rate))
        # Enough for every command the bucket lets through in two windows.
        self.replays = ReplayCache(max(1024, int(rate * 2 * window_s * 2) + 64))
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))

    def reconfigure(self, *, key: bytes | None, window_s: float, rate: float) -> None:
        """A pushed config changed the key/window/rate; the replay cache is kept."""
        self.key = key
        self.window_ms = int(window_s * 1000)
        if (self.bucket.rate, self.bucket.burst) != (rate, max(1.0, 2 * rate)):
            self.bucket = TokenBucket(rate, max(1.0, 2 * rate))
        self.replays.capacity = max(self.replays.capacity, int(rate * 2 * window_s * 2) + 64)

    def rate_ok(self) -> bool:
        return self.bucket.try_take()

    def check_signature(self, request: dict[str, Any], command: str) -> None:
        """Signature, then window, then replay: only authentic ids enter the cache."""
        if self.key is None:
            return
        sig = request.get("sig")
        if not isinstance(sig, str) or not sig:
            raise CommandError("refused: command is not signed (this gateway requires a signature)")
        expected = sign(request, self.key)
        if not hmac.compare_digest(sig.lower(), expected):
            raise CommandError("refused: bad signature")
        # A signed request that names its command must arrive on that command's
        # topic: a captured signed `ping` cannot be replayed as `restart`.
        named = request.get("cmd")
        if named is not None and named != command:
            raise CommandError(f"refused: signed for command {named!r}, received on {command!r}")
        ts = request.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise CommandError("refused: signed command has no integer \"ts\" (ms since the epoch)")
        now = self._clock_ms()
        if abs(now - ts) > self.window_ms:
            raise CommandError(
                f"refused: stale command (ts is {(now - ts) / 1000:+.1f} s from the gateway's "
                f"clock, window {self.window_ms / 1000:g} s)")
        rid = str(request.get("id"))
        if self.replays.seen(rid, now):
            raise CommandError(f"refused: id {rid!r} was used before (replay)")
        self.replays.add(rid, ts + self.window_ms, now)
