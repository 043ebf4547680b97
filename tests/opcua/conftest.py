"""Fixtures for the OPC UA tests: a real asyncua server in-process, free ports."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.driver import DriverContext
from agent.metrics import DeviceCounters

NS = "urn:edge-agent:demo"


async def wait_for(
    cond: Callable[[], object],
    timeout: float = 20.0,
    what: str = "it",
) -> None:
    """Poll a condition (no fixed sleeps); generous timeout for a noisy machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cond()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def device(endpoint: str, tags: list[dict[str, Any]], **extra: Any) -> Any:
    from drivers.opcua.options import OpcuaDevice

    conn = {"endpoint": endpoint, "timeout": "2s", "keepalive": "500ms",
            **extra.pop("connection", {})}
    return OpcuaDevice.model_validate(
        {"name": "plc", "driver": "opcua", "connection": conn, "tags": tags, **extra})


@pytest.fixture
def context(tmp_path: Path) -> DriverContext:
    return DriverContext(state_dir=tmp_path / "state", counters=DeviceCounters(),
                         log=logging.getLogger("test.opcua"))


@pytest.fixture
def wait() -> Callable[..., Awaitable[None]]:
    return wait_for


@pytest.fixture
def make_device() -> Callable[..., Any]:
    return device
