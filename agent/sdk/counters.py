"""Counters the agent keeps; monotonic since start, read by management."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LATENCY_BUCKETS_MS", "DeviceCounters", "UplinkCounters"]

#: Upper bounds (ms) of the read-latency histogram: fixed, so a poll costs one
#: bisect and one list increment, and every device's histogram lines up.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
)


@dataclass
class DeviceCounters:
    polls: int = 0
    errors: int = 0
    overruns: int = 0
    reconnects: int = 0
    #: The device was restarted by the scheduler: its driver raised something
    #: unexpected (a bug), its task died, or it stopped making progress.
    device_restarts: int = 0
    last_good_ms: int | None = None
    last_latency_ms: float | None = None
    # Latency summed so metrics can report a mean without keeping samples.
    latency_sum_ms: float = 0.0
    # Reads per latency bucket (not cumulative); the last one is "above every bound".
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    connected: bool = False
    last_error: str | None = None
    # Driver-specific reasons (bad checksum, illegal address, ...), by name.
    driver: Counter[str] = field(default_factory=Counter)

    def observe_latency(self, ms: float) -> None:
        """Record one read's latency (the scheduler calls it per successful read)."""
        self.last_latency_ms = round(ms, 2)
        self.latency_sum_ms += ms
        self.latency_buckets[bisect_left(LATENCY_BUCKETS_MS, ms)] += 1

    def count(self, reason: str, n: int = 1) -> None:
        """For drivers: count one occurrence of ``reason`` (e.g. 'frame_no_match')."""
        self.driver[reason] += n

    def snapshot(self) -> dict[str, Any]:
        mean = self.latency_sum_ms / self.polls if self.polls else None
        return {
            "connected": self.connected,
            "polls": self.polls,
            "errors": self.errors,
            "overruns": self.overruns,
            "reconnects": self.reconnects,
            "device_restarts": self.device_restarts,
            "last_good_ms": self.last_good_ms,
            "latency_ms": None if mean is None else round(mean, 2),
            "last_latency_ms": self.last_latency_ms,
            "last_error": self.last_error,
            **({"driver": dict(self.driver)} if self.driver else {}),
        }


@dataclass
class UplinkCounters:
    connected: bool = False
    sent: int = 0
    acked: int = 0
    reconnects: int = 0
    errors: int = 0
    last_error: str | None = None
    #: Counters of the Sparkplug edge node (births, rebirths, DCMD writes and refusals, ...).
    sparkplug: dict[str, int] = field(default_factory=dict)
    #: Wall-clock ms of the current session's start; None while down.
    connected_since_ms: int | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # "Connected since" follows every change of ``connected`` without the
        # uplink having to remember a second field (it sets ``connected`` only).
        if name == "connected" and value != getattr(self, "connected", None):
            super().__setattr__("connected_since_ms", int(time.time() * 1000) if value else None)
        super().__setattr__(name, value)

    def snapshot(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "connected_since_ms": self.connected_since_ms,
            "sent": self.sent,
            "acked": self.acked,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "last_error": self.last_error,
            **({"sparkplug": dict(self.sparkplug)} if self.sparkplug else {}),
        }
