"""Helpers for the Modbus tests: device configs, drivers, waiting."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.sdk.counters import DeviceCounters
from agent.sdk.driver import DriverContext
from agent.sdk.links import SharedLinks
from agent.sdk.readings import Sample
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.options import ModbusDevice

#: The map every TCP test server has (unit 1): gaps answer "illegal data address".
LAYOUT: dict[Any, Any] = {
    "hr": [(0, 100), (110, 10), (200, 40), (300, 10), (1000, 130)],
    "ir": [(0, 20)],
    "co": [(0, 32)],
    "di": [(0, 32)],
}


def device(port: int | str, tags: list[dict[str, Any]], **extra: Any) -> ModbusDevice:
    """A validated device config pointing at a test server."""
    conn = extra.pop("connection", {})
    if isinstance(port, int):
        base: dict[str, Any] = {"transport": "tcp", "host": "127.0.0.1", "port": port}
    else:
        base = {"transport": "rtu", "port": port}
    base.update({"timeout": "500ms"}, **conn)
    return ModbusDevice.model_validate(
        {"name": extra.pop("name", "dev"), "driver": "modbus", "connection": base,
         "tags": tags, **extra}
    )


def make_driver(cfg: ModbusDevice, links: SharedLinks | None = None) -> ModbusDriver:
    ctx = DriverContext(
        state_dir=Path("/nonexistent"), counters=DeviceCounters(),
        log=logging.getLogger(f"test.{cfg.name}"),
        links=SharedLinks() if links is None else links,
    )
    return ModbusDriver(cfg, ctx)


async def read_once(port: int | str, tags: list[dict[str, Any]]) -> Sample:
    """Connect a driver for ``tags``, read them once, close."""
    driver = make_driver(device(port, tags))
    await driver.connect()
    try:
        return await driver.read()
    finally:
        await driver.close()


async def wait_for(cond: Any, within: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def on_send(record: Callable[[Any], None]) -> Callable[[bool, Any], Any]:
    """A pymodbus ``trace_pdu`` hook that reports every PDU the client sends."""

    def trace(sending: bool, pdu: Any) -> Any:
        if sending:
            record(pdu)
        return pdu

    return trace
