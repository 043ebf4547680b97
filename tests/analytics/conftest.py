"""Analytics fixtures: a real Modbus server whose registers the test sets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from drivers.modbus.simserver import SimServer
from tests.modbus.helpers_modbus import LAYOUT


@pytest.fixture
async def server() -> AsyncIterator[SimServer]:
    sim = await SimServer.tcp({1: LAYOUT})
    try:
        yield sim
    finally:
        await sim.stop()
