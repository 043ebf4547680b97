"""Entry point ``edge_agent.simulators: modbus``: a simulated press for ``edge-agent demo``.

A pymodbus TCP server on a free port of 127.0.0.1 whose values change every
half second: an oil temperature (float32, drifting sine), a cycle counter
(uint32), a running coil, an alarm bit in a status register, and a writable
int16 setpoint the demo can write to.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import pathlib
import time
from typing import Any

from drivers.modbus.simserver import SimServer

__all__ = ["LAYOUT", "simulate", "start_press"]

UNIT = 1
LAYOUT: dict[Any, Any] = {"hr": [(0, 64), (100, 20), (200, 10)], "co": [(0, 16)], "di": [(0, 16)]}

TAGS: list[dict[str, Any]] = [
    {"name": "oil_temp", "address": "HR100", "type": "float32", "unit": "degC"},
    {"name": "cycles", "address": "HR102", "type": "uint32"},
    {"name": "running", "address": "CO0"},
    {"name": "alarm", "address": "HR110.3"},
    {"name": "setpoint", "address": "HR200", "type": "int16", "writable": True,
     "min": 0, "max": 500},
]


def _step(sim: SimServer, t: float, cycles: int) -> None:
    sim.set_value(UNIT, "hr", 100, ">f", 60.0 + 5.0 * math.sin(t / 20.0))
    sim.set_value(UNIT, "hr", 102, ">I", cycles & 0xFFFFFFFF)
    sim.set_bit(UNIT, "co", 0, int(t / 30) % 4 != 3)  # stops for 30 s every 2 min
    status = sim.registers(UNIT, "hr", 110, 1)[0]
    alarm = int(t / 10) % 6 == 5
    sim.set_registers(UNIT, "hr", 110, [(status | 8) if alarm else (status & ~8)])


async def _animate(sim: SimServer) -> None:
    start = time.monotonic()
    cycles = 0
    while True:
        cycles += 1
        _step(sim, time.monotonic() - start, cycles)
        await asyncio.sleep(0.5)


async def start_press(stack: contextlib.AsyncExitStack) -> SimServer:
    """Start the simulated press; cleanup goes on ``stack``."""
    sim = await SimServer.tcp({UNIT: LAYOUT})
    stack.push_async_callback(sim.stop)
    sim.set_registers(UNIT, "hr", 200, [250])
    _step(sim, 0.0, 0)
    task = asyncio.create_task(_animate(sim), name="modbus-simulator")

    async def _stop_task() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(_stop_task)
    return sim


async def simulate(stack: contextlib.AsyncExitStack, workdir: pathlib.Path) -> list[dict[str, Any]]:
    sim = await start_press(stack)
    return [
        {
            "name": "sim-press",
            "driver": "modbus",
            "connection": {"transport": "tcp", "host": "127.0.0.1", "port": sim.port,
                           "unit": UNIT, "timeout": "1s"},
            "poll": "1s",
            "tags": [dict(t) for t in TAGS],
        }
    ]
