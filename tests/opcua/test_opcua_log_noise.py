"""An OPC UA server restart logs a few lines at most (asyncua's traceback stays out)."""

from __future__ import annotations

import io
from typing import Any

from asyncua import ua

from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.simulator import free_port, start_server
from tests.core.test_log_noise import journal
from tests.opcua.test_opcua_recovery import Loop

__all__ = ["journal"]  # the fixture, shared with tests/core/test_log_noise.py


async def test_opcua_server_restart_logs_a_few_lines_at_most(
        context: Any, make_device: Any, wait: Any, journal: io.StringIO) -> None:
    port = free_port()
    sim = await start_server(port, variables={"A": (ua.VariantType.Double, 1.0)})
    cfg = make_device(sim.endpoint, [{"name": "a", "node": "nsu=urn:edge-agent:demo;s=A"}],
                      mode="subscribe", interval="50ms")
    loop = Loop(OpcuaDriver(cfg, context))
    try:
        for value in (2.0, 3.0):
            await wait(lambda: loop.latest("a") is not None, what="values")
            await sim.stop()
            await wait(lambda: loop.errors, what="the loss to be reported")
            sim = await start_server(port, variables={"A": (ua.VariantType.Double, value)})
            await wait(lambda v=value: loop.latest("a") == v, timeout=20,
                       what="values after restart")
    finally:
        await loop.stop()
        await sim.stop()
    # The simulator's own start-up warnings are the server's, not the client's.
    lines = [line for line in journal.getvalue().splitlines()
             if " asyncua" in line and "asyncua.server" not in line]
    assert len(lines) <= 2, lines
    assert "Traceback" not in journal.getvalue()
