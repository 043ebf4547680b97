# asyncua annotates its constructors with NewTypes (ua.Int16, ua.String, ...) and
# re-exports without __all__; plain ints/strs are what it takes at run time.
# mypy: disable-error-code="arg-type, attr-defined"
"""Session loss: server restarts, frozen servers, reordered namespaces.

The driver is driven the way the scheduler drives it: connect, stream (or
read), and on DeviceUnavailable close and reconnect after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import pytest
from asyncua import ua

from agent.sdk.backoff import Backoff
from agent.sdk.driver import DeviceUnavailable
from agent.sdk.readings import Sample
from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.simulator import free_port, start_server
from tests.opcua.conftest import SampleLog

NS = "urn:edge-agent:demo"
VT = ua.VariantType


class Loop(SampleLog):
    """A scheduler-like loop: reconnect with capped jittered backoff."""

    def __init__(self, driver: OpcuaDriver) -> None:
        self.driver = driver
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.connects = 0
        self.backoff = Backoff(0.2, 1.0)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.driver.connect()
                self.connects += 1
                self.backoff.reset()
                if self.driver.push:
                    await self.driver.stream(self.emit)
                else:
                    while True:
                        self.samples.append(await self.driver.read())
                        await asyncio.sleep(0.05)
            except DeviceUnavailable as err:
                self.errors.append(str(err))
            finally:
                await self.driver.close()
            await asyncio.sleep(self.backoff.next())

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class FreezableProxy:
    """TCP relay that can stop forwarding while keeping the sockets open:
    to the client the server looks hung (a frozen PLC, a dead route)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.running = asyncio.Event()
        self.running.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", self.port)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                await self.running.wait()
                dst.write(data)
                await dst.drain()
        dst.close()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    async def close(self) -> None:
        self.running.set()
        self.server.close()


async def test_restart_with_reordered_namespaces_recovers_subscription(
    context: Any, make_device: Any, wait: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncua")
    port = free_port()
    sim = await start_server(port, variables={"A": (VT.Double, 1.0)})
    assert sim.ns == 2
    cfg = make_device(sim.endpoint, [
        {"name": "a", "node": f"nsu={NS};s=A"},
        {"name": "by_index", "node": "ns=2;s=A"},
    ], mode="subscribe", interval="50ms")
    loop = Loop(OpcuaDriver(cfg, context))
    try:
        await wait(lambda: loop.latest("a") == 1.0 and loop.latest("by_index") == 1.0,
                   what="initial values")
        await sim.stop()
        await wait(lambda: loop.errors, what="the loss to be reported")
        # The server comes back with another namespace in front of ours.
        sim = await start_server(port, variables={"A": (VT.Double, 2.0)},
                                 namespaces=("urn:vendor:extra", NS))
        answering = time.monotonic()
        assert sim.ns == 3
        await wait(lambda: loop.latest("a") == 2.0, timeout=15, what="values after restart")
        recovered = time.monotonic() - answering
        assert recovered < 5.0, f"recovery took {recovered:.1f}s"
        # ns=2 now names the vendor's namespace: the index form points nowhere.
        await wait(lambda: any(s.bad.get("by_index") == "BadNodeIdUnknown" for s in loop.samples),
                   what="index-form tag to go bad")
        await sim.set("A", 3.0, VT.Double)
        await wait(lambda: loop.latest("a") == 3.0, what="changes after recovery")
    finally:
        await loop.stop()
        await sim.stop()
    assert loop.connects == 2
    assert "connection lost" in loop.errors[0] or "subscription ended" in loop.errors[0]
    # The outage is the agent's to log, once; the client library stays quiet.
    noise = [r for r in caplog.records
             if r.name.startswith("asyncua.client") and r.levelno >= logging.WARNING]
    assert noise == []


async def test_frozen_server_is_detected_by_the_watchdog(
    context: Any, make_device: Any, wait: Any
) -> None:
    sim = await start_server(variables={"A": (VT.Double, 1.0)})
    proxy = FreezableProxy(sim.port)
    await proxy.start()
    cfg = make_device(f"opc.tcp://127.0.0.1:{proxy.port}/",
                      [{"name": "a", "node": f"nsu={NS};s=A"}], mode="subscribe", interval="100ms")
    loop = Loop(OpcuaDriver(cfg, context))
    try:
        await wait(lambda: loop.latest("a") == 1.0, what="initial value")
        proxy.running.clear()
        frozen = time.monotonic()
        await wait(lambda: loop.errors, timeout=15, what="the frozen server to be noticed")
        assert time.monotonic() - frozen < 6.0
        proxy.running.set()
        await sim.set("A", 5.0, VT.Double)
        await wait(lambda: loop.latest("a") == 5.0, timeout=15, what="recovery after thaw")
    finally:
        await loop.stop()
        await proxy.close()
        await sim.stop()


async def test_poll_mode_reports_a_stopped_server_once_per_attempt(
    context: Any, make_device: Any, wait: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await start_server(variables={"A": (VT.Double, 1.0)})
    cfg = make_device(sim.endpoint, [{"name": "a", "node": f"nsu={NS};s=A"}], mode="poll",
                      interval="100ms")
    drv = OpcuaDriver(cfg, context)
    await drv.connect()
    try:
        assert (await drv.read()).values == {"a": 1.0}
        await sim.stop()
        deadline = time.monotonic() + 10
        with pytest.raises(DeviceUnavailable):
            while time.monotonic() < deadline:  # the first read after the stop may race it
                await drv.read()
                await asyncio.sleep(0.05)
    finally:
        await drv.close()
    # Reconnect attempts against a dead port fail with a clear message and
    # the driver itself logs nothing: the scheduler logs the outage once.
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    for _ in range(3):
        with pytest.raises(DeviceUnavailable, match="refused the connection"):
            await drv.connect()
        await drv.close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_subscription_lost_on_the_server_is_rebuilt(
    context: Any, make_device: Any, wait: Any
) -> None:
    # The session stays up but the server forgets the subscription (a PLC
    # that reloads its program does this): no data and no keep-alives.
    sim = await start_server(variables={"A": (VT.Double, 1.0)})
    cfg = make_device(sim.endpoint, [{"name": "a", "node": f"nsu={NS};s=A"}],
                      mode="subscribe", interval="50ms")
    loop = Loop(OpcuaDriver(cfg, context))
    try:
        await wait(lambda: loop.latest("a") == 1.0, what="initial value")
        subs = sim.server.iserver.subscription_service
        await subs.delete_subscriptions(list(subs.subscriptions))
        await wait(lambda: loop.errors, timeout=15, what="the silent subscription to be noticed")
        assert "no data or keep-alive" in loop.errors[0] or "subscription ended" in loop.errors[0]
        await sim.set("A", 8.0, VT.Double)
        await wait(lambda: loop.latest("a") == 8.0, timeout=15, what="a new subscription")
        assert loop.connects == 2
    finally:
        await loop.stop()
        await sim.stop()


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_namespace_registered_after_connect_is_picked_up(
    context: Any, make_device: Any, wait: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # Some servers open their port before they have loaded their project.
    import drivers.opcua.driver as driver_module

    monkeypatch.setattr(driver_module, "NAMESPACE_RECHECK", 0.2)
    sim = await start_server(variables={}, namespaces=("urn:vendor:other",))
    cfg = make_device(sim.endpoint, [{"name": "a", "node": f"nsu={NS};s=A"}], mode=mode,
                      interval="100ms")
    loop = Loop(OpcuaDriver(cfg, context))
    try:
        await wait(lambda: any("a" in s.bad for s in loop.samples), what="the tag to be bad")
        assert loop.samples[0].bad == {"a": f"namespace {NS} is not on the server"}
        ns = await sim.server.register_namespace(NS)
        await sim.server.nodes.objects.add_variable(ua.NodeId("A", ns), "A", 6.5)
        await wait(lambda: loop.latest("a") == 6.5, what="the late namespace's value")
    finally:
        await loop.stop()
        await sim.stop()
    assert loop.connects == 1 and loop.errors == []
