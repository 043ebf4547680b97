"""The driver under the core's real scheduler: five units on one RTU bus, one dead."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.config.plugins import load_plugins
from agent.pipeline.scheduler import Scheduler
from agent.sdk.driver import DriverPlugin
from agent.sdk.readings import Sample
from drivers.modbus.simserver import SimServer
from tests.modbus.helpers_modbus import LAYOUT, device


async def test_scheduler_keeps_the_live_units_rate(
    pty_pair: tuple[str, str], tmp_path: Path
) -> None:
    server_end, client_end = pty_pair
    units = [1, 2, 3, 4, 5]
    sim = await SimServer.serial(server_end, {u: LAYOUT for u in units})
    sim.silent.add(4)
    for u in units:
        sim.set_registers(u, "hr", 7, [u * 11])
    got: dict[str, list[Sample]] = {}

    def sink(name: str, samples: list[Sample]) -> None:
        got.setdefault(name, []).extend(samples)

    plugin = load_plugins()["modbus"]
    assert isinstance(plugin, DriverPlugin)
    scheduler = Scheduler(plugins={"modbus": plugin}, state_dir=tmp_path, sink=sink)
    period, seconds = 0.25, 5.0
    tags: list[dict[str, Any]] = [{"name": "v", "address": "HR7"},
                                  {"name": "w", "address": "HR30", "type": "float32"}]
    try:
        for u in units:
            scheduler.start(device(client_end, tags, name=f"u{u}", poll=period,
                                   connection={"unit": u, "timeout": "200ms"}))
        await asyncio.sleep(seconds)  # the measurement window itself, not a wait for state
    finally:
        await scheduler.stop_all()
        await sim.stop()
    ticks = seconds / period
    for u in (1, 2, 3, 5):
        good = [s for s in got.get(f"u{u}", []) if not s.bad]
        assert len(good) >= 0.85 * ticks - 2, (u, len(good), ticks)
        assert good[-1].values["v"] == u * 11
    dead = got.get("u4", [])
    # The dead unit is never silent: a bad sample every tick, with the reason.
    assert len(dead) >= 0.85 * ticks - 2
    assert all(s.bad and s.values == {"v": None, "w": None} for s in dead)
    assert any("not answering" in s.bad["v"] or "timeout" in s.bad["v"] for s in dead)
