"""The agent's health and status, as data: one owner for what ``status``,
the ``metrics`` message and the local HTTP endpoint report.

``collect`` is the health part (process, buffer, uplink, devices);
``snapshot`` adds the state message, the latest readings and whatever the
caller knows beyond the pipeline (``extra``, e.g. a pending config push).
"""

from __future__ import annotations

import os
import resource
import time
from typing import TYPE_CHECKING, Any

from agent.sdk.readings import now_ms

if TYPE_CHECKING:
    from agent.runtime.agent import Agent

__all__ = ["CpuSampler", "collect", "resident_bytes", "snapshot"]


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """The process's resident memory now (Linux ``/proc``; elsewhere its peak).

    Read directly rather than through psutil, which would cost the agent
    ~1 MB of resident memory for two numbers.
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        # ru_maxrss is in KiB on Linux (bytes on macOS; good enough as a fallback).
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class CpuSampler:
    """CPU seconds since start, and percent of one core since the previous call."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def sample(self) -> dict[str, Any]:
        times = os.times()  # this process only; children are counted apart
        used = times.user + times.system
        now = time.monotonic()
        percent = None
        if self._last is not None and now > self._last[0]:
            percent = round(100.0 * (used - self._last[1]) / (now - self._last[0]), 1)
        self._last = (now, used)
        return {"user_s": round(times.user, 2), "system_s": round(times.system, 2),
                "percent": percent}


def collect(agent: Agent, cpu: CpuSampler | None = None) -> dict[str, Any]:
    """One metrics payload (also the body of ``status``'s health part)."""
    cpu = cpu or CpuSampler()
    return {
        "ts": now_ms(),
        "uptime_s": round(agent.uptime(), 1),
        "config_hash": agent.site.hash,
        "cpu": cpu.sample(),
        "memory": {"rss_bytes": resident_bytes()},
        "buffer": agent.buffer.stats.snapshot(),
        "uplink": agent.uplink.counters.snapshot(),
        "devices": {name: r.counters.snapshot() for name, r in agent.scheduler.runners.items()},
        # Active alarms per device: {device: [{alarm, tag, since, value, limit, severity}]}.
        "alarms": agent.processing.active_alarms(),
    }


def snapshot(agent: Agent, cpu: CpuSampler, **extra: Any) -> dict[str, Any]:
    """The ``status`` result: state, health, and each device's latest sample."""
    return {
        **agent.state("online"),
        **collect(agent, cpu),
        "latest": {name: s.to_json_obj() for name, s in agent.latest.items()},
        **extra,
    }
