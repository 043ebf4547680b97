"""RTU and ASCII over a pty pair (socat), RTU over TCP, and a shared bus with a dead unit."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent.sdk.driver import DeviceUnavailable
from agent.sdk.links import SharedLinks
from drivers.modbus.bus import NoAnswer, UnitDown
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.simserver import SimServer
from tests.modbus.helpers_modbus import LAYOUT, device, make_driver, on_send, wait_for

TAGS: list[dict[str, Any]] = [
    {"name": "temp", "address": "HR10", "type": "float32", "order": "CDAB"},
    {"name": "count", "address": "HR12", "type": "uint32"},
    {"name": "run", "address": "CO3"},
    {"name": "freq", "address": "IR3", "scale": 0.01},
]


def _fill(sim: SimServer, unit: int) -> None:
    sim.set_value(unit, "hr", 10, ">f", 20.5 + unit, "CDAB")
    sim.set_value(unit, "hr", 12, ">I", 100000 + unit)
    sim.set_bit(unit, "co", 3, True)
    sim.set_registers(unit, "ir", 3, [5000 + unit])


@pytest.mark.parametrize("framer", ["rtu", "ascii"])
async def test_serial_read_and_write(pty_pair: tuple[str, str], framer: str) -> None:
    server_end, client_end = pty_pair
    sim = await SimServer.serial(server_end, {4: LAYOUT}, framer=framer)
    try:
        _fill(sim, 4)
        tags = [*TAGS, {"name": "sp", "address": "HR20", "type": "int16", "writable": True}]
        cfg = device(client_end, tags, connection={"transport": framer, "unit": 4,
                                                    "baudrate": 19200})
        driver = make_driver(cfg)
        await driver.connect()
        try:
            sample = await driver.read()
            assert sample.bad == {}
            assert sample.values == {"temp": 24.5, "count": 100004, "run": True, "freq": 50.04,
                                     "sp": 0}
            assert await driver.write("sp", -5) == -5
        finally:
            await driver.close()
    finally:
        await sim.stop()


async def test_rtu_over_tcp() -> None:
    sim = await SimServer.tcp({2: LAYOUT}, framer="rtu")
    try:
        _fill(sim, 2)
        cfg = device(sim.port, TAGS, connection={"transport": "rtu_over_tcp", "unit": 2})
        driver = make_driver(cfg)
        await driver.connect()
        try:
            sample = await driver.read()
        finally:
            await driver.close()
        assert sample.values == {"temp": 22.5, "count": 100002, "run": True, "freq": 50.02}
    finally:
        await sim.stop()


async def test_missing_or_unusable_serial_port_is_unavailable(
    tmp_path: Any, pty_pair: tuple[str, str]
) -> None:
    driver = make_driver(device(str(tmp_path / "ttyNONE"), TAGS))
    with pytest.raises(DeviceUnavailable, match="does not exist"):
        await driver.connect()
    await driver.close()
    # A pty refuses parity: the termios error becomes DeviceUnavailable, not a crash.
    driver = make_driver(device(pty_pair[1], TAGS, connection={"parity": "E"}))
    with pytest.raises(DeviceUnavailable, match="cannot connect"):
        await driver.connect()
    await driver.close()


async def _poller(driver: ModbusDriver, period: float, stop: float, log: list[Any]) -> None:
    """A minimal scheduler: wall-clock aligned polls, overruns skipped, errors recorded."""
    connected = False
    next_at = time.monotonic()
    while True:
        next_at += period
        now = time.monotonic()
        if now >= stop:
            return
        try:
            if not connected:
                await driver.connect()
                connected = True
            log.append(("ok", time.monotonic(), await driver.read()))
        except DeviceUnavailable as err:
            log.append(("down", time.monotonic(), err))
            await driver.close()
            connected = False
        while next_at < time.monotonic():
            next_at += period  # overrun: counted by the real scheduler, never stacked
        await asyncio.sleep(next_at - time.monotonic())


async def test_dead_unit_is_backed_off_and_others_keep_their_rate(
    pty_pair: tuple[str, str],
) -> None:
    server_end, client_end = pty_pair
    units = [1, 2, 3, 4, 5]
    sim = await SimServer.serial(server_end, {u: LAYOUT for u in units})
    sim.silent.add(3)
    for u in units:
        _fill(sim, u)
    links = SharedLinks()  # what the scheduler gives all devices of the driver
    drivers = {
        u: make_driver(
            device(client_end, TAGS, name=f"u{u}",
                   connection={"unit": u, "timeout": "200ms", "retries": 1}),
            links,
        )
        for u in units
    }
    period, duration = 0.5, 6.0
    logs: dict[int, list[Any]] = {u: [] for u in units}
    stop = time.monotonic() + duration
    try:
        await asyncio.gather(*(_poller(drivers[u], period, stop, logs[u]) for u in units))
        dead = logs[3]
        assert dead and all(kind == "down" for kind, _, _ in dead)
        assert isinstance(dead[0][2], NoAnswer)
        # Backed off: most of its polls never reached the wire.
        skipped = sum(isinstance(e, UnitDown) for _, _, e in dead)
        assert skipped >= len(dead) - 5
        bus = drivers[1].bus
        assert bus.unit(3).down
        assert drivers[3].context.counters.driver["unit_skipped"] == skipped
        expected = duration / period
        for u in (1, 2, 4, 5):
            good = [s for kind, _, s in logs[u] if kind == "ok" and not s.bad]
            assert len(good) >= 0.9 * expected - 1, (u, len(good), expected)
            assert good[-1].values["count"] == 100000 + u
        # The unit comes back: a probe finds it and it reads again.
        sim.silent.discard(3)
        recovered: list[Any] = []

        async def try_read() -> None:
            while not recovered:
                try:
                    await drivers[3].connect()
                    recovered.append(await drivers[3].read())
                except DeviceUnavailable:
                    await drivers[3].close()
                    await asyncio.sleep(0.1)

        await asyncio.wait_for(try_read(), timeout=30)
        assert recovered[0].values["count"] == 100003
        assert not bus.unit(3).down
    finally:
        for d in drivers.values():
            await d.close()
        await sim.stop()
    assert len(links) == 0  # the last device closed the port


async def test_shared_port_one_connection_interleaved(pty_pair: tuple[str, str]) -> None:
    server_end, client_end = pty_pair
    sim = await SimServer.serial(server_end, {1: LAYOUT, 2: LAYOUT})
    try:
        _fill(sim, 1)
        _fill(sim, 2)
        links = SharedLinks()
        many = [{"name": f"r{a}", "address": f"HR{a}"} for a in range(0, 100, 20)]
        # A /dev/serial/by-id style link and the port it points to are one bus.
        by_id = Path(client_end).parent / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
        by_id.symlink_to(os.path.realpath(client_end))
        d1 = make_driver(device(str(by_id), many, name="a", max_gap=0,
                                connection={"unit": 1}), links)
        d2 = make_driver(device(client_end, many, name="b", max_gap=0,
                                connection={"unit": 2}), links)
        await d1.connect()
        await d2.connect()
        assert d1.bus is d2.bus and len(links) == 1
        order: list[int] = []
        client = d1.bus._client
        client.ctx.trace_pdu = on_send(lambda pdu: order.append(pdu.dev_id))
        s1, s2 = await asyncio.gather(d1.read(), d2.read())
        assert not s1.bad and not s2.bad
        # Five requests each, taken in turns rather than one scan after the other.
        assert order == [1, 2] * 5
        await d1.close()
        assert links.owners(d2.bus.key), "still used by b"
        await wait_for(lambda: d2.bus.connected, what="bus still open")
        await d2.close()
        assert len(links) == 0
    finally:
        await sim.stop()


async def test_dead_unit_behind_a_gateway_does_not_cut_the_link(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # pymodbus closes a TCP link after a few unanswered requests in a row; behind
    # an RTU-over-TCP converter that would cut off every other unit.
    sim = await SimServer.tcp({1: LAYOUT, 2: LAYOUT}, framer="rtu")
    sim.silent.add(2)
    _fill(sim, 1)
    links = SharedLinks()
    conn = {"transport": "rtu_over_tcp", "timeout": "100ms", "retries": 0}
    alive = make_driver(device(sim.port, TAGS, name="alive", connection={**conn, "unit": 1}),
                        links)
    dead = make_driver(device(sim.port, TAGS, name="dead", connection={**conn, "unit": 2}),
                       links)
    try:
        await alive.connect()
        await dead.connect()
        bus = alive.bus
        with caplog.at_level(logging.DEBUG, logger="drivers.modbus"):
            for _ in range(6):
                bus.unit(2).next_probe = 0.0  # probe now instead of after the backoff
                with pytest.raises(NoAnswer):
                    await dead.read()
        assert bus.connected
        # Logged once per outage, by us; pymodbus's error per timeout is filtered.
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.name for r in errors] == ["drivers.modbus"], caplog.text
        assert "unit 2 not answering" in errors[0].getMessage()
        assert (await alive.read()).values["count"] == 100001
        assert dead.context.counters.driver["unit_down"] == 6
    finally:
        await alive.close()
        await dead.close()
        await sim.stop()


async def test_rtu_inter_frame_silence(pty_pair: tuple[str, str]) -> None:
    # At 1200 baud 8N1, 3.5 characters of silence are 29 ms between frames.
    server_end, client_end = pty_pair
    sim = await SimServer.serial(server_end, {1: LAYOUT}, baudrate=1200)
    try:
        tags = [{"name": f"r{a}", "address": f"HR{a}"} for a in (0, 40, 80)]
        driver = make_driver(device(client_end, tags, max_gap=0,
                                    connection={"baudrate": 1200, "timeout": "1s"}))
        await driver.connect()
        sent: list[float] = []
        try:
            driver.bus._client.ctx.trace_pdu = on_send(lambda _: sent.append(time.monotonic()))
            sample = await driver.read()
        finally:
            await driver.close()
        assert not sample.bad and len(sent) == 3
        assert min(b - a for a, b in itertools.pairwise(sent)) >= 0.028
    finally:
        await sim.stop()
