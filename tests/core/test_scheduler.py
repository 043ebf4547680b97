"""Scheduler semantics with a deliberately slow driver: only time is faked-free here.

The driver below is not a protocol stand-in (drivers are tested against real
peers); it is a clock instrument: it records when and how often it is read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from agent.pipeline.scheduler import Scheduler
from agent.sdk.driver import (
    DeviceConfig,
    DeviceUnavailable,
    Driver,
    DriverContext,
    DriverPlugin,
    TagConfig,
)
from agent.sdk.readings import Sample, now_ms
from tests.conftest import async_wait_until


class Clocked(Driver):
    """Reads take ``delay`` seconds; connect fails while ``down`` is set."""

    instances: ClassVar[dict[str, Clocked]] = {}

    def __init__(self, config: DeviceConfig, context: DriverContext) -> None:
        super().__init__(config, context)
        self.delay = 0.0
        self.down = False
        self.active = 0
        self.max_active = 0
        self.starts: list[float] = []
        self.connects = 0
        Clocked.instances[config.name] = self

    async def connect(self) -> None:
        self.connects += 1
        if self.down:
            raise DeviceUnavailable("connection refused")

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        self.starts.append(time.time())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            if self.down:
                raise DeviceUnavailable("timeout")
            return Sample(ts=now_ms(), values={"x": 1})
        finally:
            self.active -= 1

    async def close(self) -> None:
        pass


PLUGIN = DriverPlugin(name="clocked", config_model=DeviceConfig, factory=Clocked)


def device(name: str, poll: float) -> DeviceConfig:
    return DeviceConfig(name=name, driver="clocked", poll=poll, tags=[TagConfig(name="x")])


async def test_ticks_are_wall_clock_aligned_and_overruns_skip(tmp_path: Path) -> None:
    out: list[tuple[str, list[Sample]]] = []
    sched = Scheduler(plugins={"clocked": PLUGIN}, state_dir=tmp_path,
                      sink=lambda d, s: out.append((d, s)))
    await sched.apply([device("fast", 0.5), device("slow", 0.2)])
    Clocked.instances["slow"].delay = 0.5  # 2.5 periods per read
    fast_counters = sched.runners["fast"].counters
    try:
        await async_wait_until(lambda: len(Clocked.instances["fast"].starts) >= 10, 30, "ticks")
        await async_wait_until(lambda: sched.runners["slow"].counters.overruns >= 4, 30, "overruns")
    finally:
        await sched.stop_all()
    fast = Clocked.instances["fast"]
    # Every read starts on a multiple of the period (no drift), give or take
    # the loop's wake-up latency on a busy machine.
    # A loop that sleeps a period after each read would drift: its phases
    # would spread over the whole period instead of bunching near 0.
    phases = [(t % 0.5) for t in fast.starts]
    assert sum(1 for p in phases if p < 0.1) >= 0.7 * len(phases), phases
    slow = Clocked.instances["slow"]
    assert slow.max_active == 1, "an overrunning device must not stack reads"
    assert fast_counters.overruns <= 3, "the slow device must not hold up the fast one"


async def test_down_device_yields_bad_samples_every_tick_and_backs_off(tmp_path: Path) -> None:
    out: list[tuple[str, list[Sample]]] = []
    sched = Scheduler(plugins={"clocked": PLUGIN}, state_dir=tmp_path,
                      sink=lambda d, s: out.append((d, s)))
    await sched.apply([device("flaky", 0.1)])
    flaky = Clocked.instances["flaky"]
    flaky.down = True
    try:
        await async_wait_until(lambda: sum(1 for d, _ in out if d == "flaky") >= 30, 30, "samples")
        bad = [s for d, batch in out for s in batch if d == "flaky" and s.bad]
        assert len(bad) >= 20 and all(s.values == {"x": None} for s in bad[-5:])
        # ~3 s of ticks but backoff (1 s, 2 s, ... jittered) keeps reconnects rare.
        assert flaky.connects <= 6
        flaky.down = False
        await async_wait_until(lambda: out[-1][1][-1].values == {"x": 1}, 30, "recovery")
        assert sched.runners["flaky"].counters.connected
    finally:
        await sched.stop_all()


async def test_apply_restarts_only_changed_devices(tmp_path: Path) -> None:
    sched = Scheduler(plugins={"clocked": PLUGIN}, state_dir=tmp_path, sink=lambda d, s: None)
    await sched.apply([device("a", 0.1), device("b", 0.1), device("c", 0.1)])
    a_runner = sched.runners["a"]
    changes = await sched.apply([device("a", 0.1), device("b", 0.2), device("d", 0.1)])
    try:
        assert changes == {"started": ["d"], "restarted": ["b"], "stopped": ["c"]}
        assert sched.runners["a"] is a_runner, "an unchanged device keeps running"
    finally:
        await sched.stop_all()
