"""Helpers for the serial tests: a pty peer, a driver on it, waiting on conditions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.sdk.counters import DeviceCounters
from agent.sdk.driver import DriverContext
from agent.sdk.readings import Sample
from drivers.serial.driver import SerialDriver
from drivers.serial.options import SerialDevice
from drivers.serial.ptypeer import PtyPeer

SCALE_RULE = {"regex": r"^(?P<state>ST|US),GS,(?P<weight>[-+][ 0-9.]+) ?kg"}
SCALE_TAGS = [
    {"name": "weight", "type": "float", "unit": "kg"},
    {"name": "stable", "group": "state", "map": {"ST": True, "US": False}},
]


def device(port: str, **options: Any) -> SerialDevice:
    raw: dict[str, Any] = {
        "name": "dev", "driver": "serial", "connection": {"port": port, "baudrate": 115200},
        "parse": SCALE_RULE, "tags": SCALE_TAGS,
    }
    raw.update(options)
    return SerialDevice.model_validate(raw)


async def wait_until(pred: Callable[[], Any], within: float = 10.0, what: str = "") -> None:
    """Wait for a condition (generous timeout: the machine is shared and noisy)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.005)


class Collected:
    """An ``emit`` that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[list[Sample]] = []

    def __call__(self, samples: list[Sample]) -> None:
        self.batches.append(list(samples))

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.batches for s in b]


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[PtyPeer]:
    p = PtyPeer(tmp_path / "ttyINSTR")
    yield p
    p.close()


@pytest.fixture
def make_driver(tmp_path: Path) -> Callable[[SerialDevice], SerialDriver]:
    def make(config: SerialDevice) -> SerialDriver:
        ctx = DriverContext(state_dir=tmp_path, counters=DeviceCounters(),
                            log=logging.getLogger(f"test.serial.{config.name}"))
        return SerialDriver(config, ctx)

    return make


Streaming = tuple[Collected, "asyncio.Task[None]"]


@pytest.fixture
async def streaming() -> AsyncIterator[Callable[[SerialDriver], Streaming]]:
    """Run ``driver.stream`` in a task; cancelled at the end of the test."""
    tasks: list[asyncio.Task[None]] = []

    def start(driver: SerialDriver) -> Streaming:
        got = Collected()
        task = asyncio.create_task(driver.stream(got))
        tasks.append(task)
        return got, task

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Kit:
    """Helpers for test modules (importlib mode: they cannot import conftest)."""

    device = staticmethod(device)
    wait_until = staticmethod(wait_until)
    Collected = Collected
    SCALE_RULE = SCALE_RULE
    SCALE_TAGS = SCALE_TAGS


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
