"""Helpers: a Modbus device with analytics options, read for real, run through its chain."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agent.pipeline.processing import DeviceChain
from agent.sdk.readings import Sample
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.options import ModbusDevice
from drivers.modbus.simserver import SimServer
from tests.modbus.helpers_modbus import device, make_driver

#: float32 tags at HR0, HR2, HR4, int16 at HR6 and HR7, a string at HR10, and
#: one in a gap of the server's map (always "illegal data address").
TAGS: list[dict[str, Any]] = [
    {"name": "a", "address": "HR0", "type": "float32"},
    {"name": "b", "address": "HR2", "type": "float32"},
    {"name": "c", "address": "HR4", "type": "float32"},
    {"name": "i", "address": "HR6", "type": "int16"},
    {"name": "j", "address": "HR7", "type": "int16"},
    {"name": "s", "address": "HR10", "type": "string", "length": 2},
]
HOLE = {"name": "hole", "address": "HR105", "type": "int16"}


def set_floats(server: SimServer, **values: float) -> None:
    at = {"a": 0, "b": 2, "c": 4}
    for name, value in values.items():
        server.set_value(1, "hr", at[name], ">f", value)


def set_ints(server: SimServer, **values: int) -> None:
    at = {"i": 6, "j": 7}
    for name, value in values.items():
        server.set_value(1, "hr", at[name], ">h", value)


@dataclass
class Rig:
    """A connected driver and the processing chain of the same device config."""

    config: ModbusDevice
    driver: ModbusDriver
    chain: DeviceChain

    async def read(self, ts: int | None = None) -> Sample:
        """One real read, stamped ``ts`` when given (tests control time, not values)."""
        sample = await self.driver.read()
        if ts is not None:
            sample.ts = ts
        return sample

    async def run(self, ts: int | None = None) -> list[Sample]:
        return self.chain.process([await self.read(ts)])


@contextlib.asynccontextmanager
async def rig(server: SimServer, tags: list[dict[str, Any]] | None = None,
              **options: Any) -> AsyncIterator[Rig]:
    config = device(server.port, TAGS if tags is None else tags, **options)
    driver = make_driver(config)
    await driver.connect()
    try:
        yield Rig(config, driver, DeviceChain(config))
    finally:
        await driver.close()
