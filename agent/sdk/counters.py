"""Counters the agent keeps; monotonic since start, read by management."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeviceCounters", "UplinkCounters"]


@dataclass
class DeviceCounters:
    polls: int = 0
    errors: int = 0
    overruns: int = 0
    reconnects: int = 0
    last_good_ms: int | None = None
    last_latency_ms: float | None = None
    # Latency summed so metrics can report a mean without keeping samples.
    latency_sum_ms: float = 0.0
    connected: bool = False
    last_error: str | None = None
    # Driver-specific reasons (bad checksum, illegal address, ...), by name.
    driver: Counter[str] = field(default_factory=Counter)

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

    def snapshot(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "sent": self.sent,
            "acked": self.acked,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "last_error": self.last_error,
        }
