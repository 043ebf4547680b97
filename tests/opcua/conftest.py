"""Fixtures for the OPC UA tests: a real asyncua server in-process, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Self

import pytest

from agent.sdk.counters import DeviceCounters
from agent.sdk.driver import DriverContext
from agent.sdk.readings import Sample
from tests.conftest import async_wait_until

NS = "urn:edge-agent:demo"


class SampleLog:
    """Keeps what a driver emits; ``latest(tag)`` is the newest value of a tag."""

    samples: list[Sample]

    def emit(self, samples: list[Sample]) -> None:
        self.samples.extend(samples)

    def latest(self, tag: str) -> Any:
        for s in reversed(self.samples):
            if tag in s.values:
                return s.values[tag]
        return "<none>"


class Streamer(SampleLog):
    """Runs ``driver.stream`` in a task and keeps what it emits."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.samples: list[Sample] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.driver.connect()
        self.task = asyncio.create_task(self.driver.stream(self.emit))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.driver.close()


# The shared condition wait, under the name these tests use.
wait_for = async_wait_until


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
