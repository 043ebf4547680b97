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
from typing import TYPE_CHECKING

from agent.runtime.status import CpuSampler

if TYPE_CHECKING:
    from agent.runtime.control import AgentControl

__all__ = ["MetricsPublisher"]

log = logging.getLogger("agent.management.metrics")


class MetricsPublisher:
    """Publishes every ``management.metrics_interval`` and once at each connect."""

    def __init__(self, control: AgentControl) -> None:
        self.control = control
        self.cpu = CpuSampler()
        self.cpu.sample()  # the first percent is then measured from start-up
        self._kick = asyncio.Event()
        control.on_connect(self._on_connect)

    async def _on_connect(self) -> None:
        # Not published here: on_connect runs inside the session start-up.
        self._kick.set()

    async def publish(self) -> bool:
        payload = json.dumps(self.control.metrics(self.cpu), separators=(",", ":"), default=str)
        return await self.control.publish(self.control.topic("metrics"), payload, qos=0)

    async def run(self) -> None:
        """The service, started and stopped with the agent."""
        while True:
            # Re-read each time: a pushed config may change the interval.
            interval = self.control.site.config.management.metrics_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), interval)
            self._kick.clear()
            try:
                await self.publish()
            except Exception:
                log.exception("metrics collection failed")
