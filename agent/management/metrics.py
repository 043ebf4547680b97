"""The ``metrics`` message: process health, buffer, devices and uplink, every interval.

Counters are monotonic since the agent started (a consumer computes rates
from differences); gauges (RSS, buffer depth, CPU percent since the last
message) are the value at the time of sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import psutil

from agent.readings import now_ms

if TYPE_CHECKING:
    from agent.app import Agent

__all__ = ["CpuSampler", "MetricsPublisher", "collect"]

log = logging.getLogger("agent.management.metrics")


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
    }


class MetricsPublisher:
    """Publishes every ``management.metrics_interval`` and once at each connect."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.cpu = CpuSampler()
        self.cpu.sample()  # the first percent is then measured from start-up
        self._kick = asyncio.Event()
        agent.uplink.on_connect.append(self._on_connect)

    async def _on_connect(self) -> None:
        # Not published here: on_connect runs inside the session start-up.
        self._kick.set()

    async def publish(self) -> bool:
        payload = json.dumps(collect(self.agent, self.cpu), separators=(",", ":"), default=str)
        return await self.agent.uplink.publish(self.agent.uplink.topic("metrics"), payload, qos=0)

    async def run(self, agent: Agent) -> None:
        """The service: ``agent.services`` calls it with the agent."""
        while True:
            # Re-read each time: a pushed config may change the interval.
            interval = agent.site.config.management.metrics_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), interval)
            self._kick.clear()
            try:
                await self.publish()
            except Exception:
                log.exception("metrics collection failed")
