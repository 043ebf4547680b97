"""The agent's health and status, as data: one owner for what ``status``,
the ``metrics`` message and the local HTTP endpoint report.

``collect`` is the health part (process, buffer, uplink, devices);
``snapshot`` adds the state message, the latest readings and whatever the
caller knows beyond the pipeline (``extra``, e.g. a pending config push).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psutil

from agent.sdk.readings import now_ms

if TYPE_CHECKING:
    from agent.runtime.agent import Agent

__all__ = ["CpuSampler", "collect", "snapshot"]


class CpuSampler:
    """CPU seconds since start, and percent of one core since the previous call."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self._last: tuple[float, float] | None = None

    def sample(self) -> dict[str, Any]:
        times = self.proc.cpu_times()
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
    mem = cpu.proc.memory_info()
    return {
        "ts": now_ms(),
        "uptime_s": round(agent.uptime(), 1),
        "config_hash": agent.site.hash,
        "cpu": cpu.sample(),
        "memory": {"rss_bytes": mem.rss},
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
