"""Modbus fixtures: a pymodbus server with a known map, socat pty pairs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from drivers.modbus.simserver import SimServer
from tests.modbus.helpers_modbus import LAYOUT

SOCAT = shutil.which("socat") or "/usr/bin/socat"


@pytest.fixture
async def server() -> AsyncIterator[SimServer]:
    sim = await SimServer.tcp({1: LAYOUT})
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals (a null-modem cable): (server end, client end)."""
    a, b = str(tmp_path / "ttyS"), str(tmp_path / "ttyC")
    proc = subprocess.Popen(
        [SOCAT, "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not (os.path.exists(a) and os.path.exists(b)):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.02)
        yield a, b
    finally:
        proc.terminate()
        proc.wait(timeout=10)
