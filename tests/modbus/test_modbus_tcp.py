"""Modbus TCP against a real pymodbus server: exceptions, learned splits, writes, outages."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import pytest

from agent.pipeline.writes import guarded_write
from agent.sdk.driver import DeviceUnavailable, DriverError, WriteRefused
from drivers.modbus.simserver import SimServer
from tests.modbus.helpers_modbus import LAYOUT, device, make_driver, on_send, read_once


async def test_exception_response_marks_only_that_block(server: SimServer) -> None:
    server.set_registers(1, "hr", 5, [42])
    tags = [{"name": "ok", "address": "HR5"}, {"name": "nowhere", "address": "HR150"}]
    sample = await read_once(server.port, tags)
    assert sample.values == {"ok": 42, "nowhere": None}
    assert sample.bad == {"nowhere": "exception 2 (illegal data address)"}


async def test_unknown_unit_gets_device_failure_on_every_tag(server: SimServer) -> None:
    tags = [{"name": "a", "address": "HR5"}, {"name": "b", "address": "CO1"}]
    driver = make_driver(device(server.port, tags, connection={"unit": 9}))
    await driver.connect()
    try:
        sample = await driver.read()
    finally:
        await driver.close()
    assert sample.bad == {"a": "exception 4 (device failure)", "b": "exception 4 (device failure)"}


async def test_merged_block_split_finds_the_bad_address_and_keeps_the_plan(
    server: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    # HR100..109 does not exist; max_gap 20 merges HR90..HR117 into one request.
    for a in (90, 95, 98, 112, 115):
        server.set_registers(1, "hr", a, [a])
    names = ["r90", "r95", "r98", "hole", "r112", "r115"]
    addrs = [90, 95, 98, 104, 112, 115]
    tags = [{"name": n, "address": f"HR{a}"} for n, a in zip(names, addrs, strict=True)]
    driver = make_driver(device(server.port, tags, max_gap=20))
    assert len(driver.planner.plan(None)) == 1
    await driver.connect()
    try:
        with caplog.at_level(logging.INFO):
            first = await driver.read()
        learned = [str(b) for b in driver.planner.plan(None)]
        before = driver.bus.requests
        second = await driver.read()
        per_scan = driver.bus.requests - before
    finally:
        await driver.close()
    expected = {n: a for n, a in zip(names, addrs, strict=True) if n != "hole"}
    for sample in (first, second):
        assert sample.bad == {"hole": "exception 2 (illegal data address)"}
        assert {k: v for k, v in sample.values.items() if k != "hole"} == expected
    # The learned plan: the good neighbours in as few requests as the split found,
    # the bad address alone; the second scan does not split again.
    assert per_scan == len(learned) <= 4
    assert "HR104+1" in learned
    assert driver.context.counters.driver["block_splits"] >= 2
    assert "refused as a whole" in caplog.text


async def test_requests_per_scan_match_the_plan(server: SimServer) -> None:
    tags = [{"name": f"h{a}", "address": f"HR{a}"} for a in range(0, 100, 3)]
    tags += [{"name": f"big{a}", "address": f"HR{a}", "type": "float64"}
             for a in range(1000, 1128, 4)]
    tags += [{"name": f"c{a}", "address": f"CO{a}"} for a in range(0, 32, 5)]
    driver = make_driver(device(server.port, tags))
    await driver.connect()
    try:
        before = driver.bus.requests
        sample = await driver.read()
        sent = driver.bus.requests - before
    finally:
        await driver.close()
    assert not sample.bad
    # HR0..99 (1), HR1000..1127 is 128 registers > 125 (2), coils (1).
    assert sent == len(driver.planner.plan(None)) == 4


async def test_writes_guarded_and_read_back(server: SimServer) -> None:
    server.set_registers(1, "hr", 110, [0b0001])
    tags: list[dict[str, Any]] = [
        {"name": "setpoint", "address": "HR200", "type": "int16", "writable": True,
         "min": 0, "max": 500},
        {"name": "raw16", "address": "HR201", "type": "int16", "writable": True},
        {"name": "speed", "address": "HR202", "type": "float32", "order": "CDAB",
         "writable": True},
        {"name": "total", "address": "HR204", "type": "uint32", "writable": True,
         "scale": 0.1},
        {"name": "mode", "address": "HR206", "map": {0: "off", 1: "auto"}, "writable": True},
        {"name": "label", "address": "HR207", "type": "string", "length": 3, "writable": True},
        {"name": "flag", "address": "HR110.2", "writable": True},
        {"name": "run", "address": "CO4", "writable": True},
        {"name": "locked", "address": "HR210"},
        {"name": "sensor", "address": "IR1"},
    ]
    driver = make_driver(device(server.port, tags))
    await driver.connect()
    try:
        assert await guarded_write(driver, "setpoint", 321, origin="test") == 321
        assert server.registers(1, "hr", 200, 1) == [321]
        with pytest.raises(WriteRefused, match="above max"):
            await guarded_write(driver, "setpoint", 501, origin="test")
        with pytest.raises(WriteRefused, match="range of int16"):
            await guarded_write(driver, "raw16", 40000, origin="test")
        with pytest.raises(WriteRefused, match="not writable"):
            await guarded_write(driver, "locked", 1, origin="test")
        assert server.registers(1, "hr", 200, 2) == [321, 0]  # refused writes sent nothing
        assert await guarded_write(driver, "raw16", -2, origin="test") == -2
        assert await guarded_write(driver, "speed", 1.25, origin="test") == 1.25
        assert server.registers(1, "hr", 202, 2) == [0x0000, 0x3FA0]  # CDAB of 1.25
        assert await guarded_write(driver, "total", 123.4, origin="test") == 123.4
        assert server.registers(1, "hr", 204, 2) == [0, 1234]
        with pytest.raises(WriteRefused, match="exactly"):
            await guarded_write(driver, "total", 1.23, origin="test")
        assert await guarded_write(driver, "mode", "auto", origin="test") == "auto"
        with pytest.raises(WriteRefused):
            await guarded_write(driver, "mode", "manual", origin="test")
        assert await guarded_write(driver, "label", "AB", origin="test") == "AB"
        with pytest.raises(WriteRefused, match="longer"):
            await guarded_write(driver, "label", "ABCDEFG", origin="test")
        assert await guarded_write(driver, "flag", True, origin="test") is True
        assert server.registers(1, "hr", 110, 1) == [0b0101]  # bit 0 kept
        assert await guarded_write(driver, "run", "on", origin="test") is True
        assert server.bit(1, "co", 4)
        with pytest.raises(WriteRefused, match="read-only"):
            await driver.write("sensor", 1)
    finally:
        await driver.close()


async def test_fc15_fc16_when_write_functions_multiple(server: SimServer) -> None:
    tags = [{"name": "sp", "address": "HR220", "writable": True},
            {"name": "c", "address": "CO9", "writable": True}]
    seen: list[int] = []
    driver = make_driver(device(server.port, tags, write_functions="multiple"))
    await driver.connect()
    try:
        client = driver.bus._client
        client.ctx.trace_pdu = on_send(lambda pdu: seen.append(pdu.function_code))
        assert await driver.write("sp", 7) == 7
        assert await driver.write("c", True) is True
    finally:
        await driver.close()
    assert 16 in seen and 15 in seen and 6 not in seen and 5 not in seen


async def test_write_to_a_register_that_refuses(server: SimServer) -> None:
    tags = [{"name": "ghost", "address": "HR150", "writable": True}]
    driver = make_driver(device(server.port, tags))
    await driver.connect()
    try:
        with pytest.raises(DriverError, match="illegal data address"):
            await driver.write("ghost", 1)
    finally:
        await driver.close()


async def test_server_gone_then_back() -> None:
    sim = await SimServer.tcp({1: LAYOUT})
    port = sim.port
    sim.set_registers(1, "hr", 1, [7])
    driver = make_driver(device(port, [{"name": "a", "address": "HR1"}]))
    await driver.connect()
    assert (await driver.read()).values == {"a": 7}
    await sim.stop()
    with pytest.raises(DeviceUnavailable):
        await driver.read()
    await driver.close()
    with pytest.raises(DeviceUnavailable):
        await driver.connect()  # nobody listens
    await driver.close()
    # The device comes back on the same port: connect and read work again.
    sim2 = await SimServer.tcp({1: LAYOUT}, port=port)
    try:
        sim2.set_registers(1, "hr", 1, [8])
        await driver.connect()
        assert (await driver.read()).values == {"a": 8}
        await driver.close()
    finally:
        await sim2.stop()


async def test_close_after_scan_reopens(server: SimServer) -> None:
    server.set_registers(1, "hr", 3, [9])
    driver = make_driver(device(server.port, [{"name": "a", "address": "HR3"}],
                                connection={"close_after_scan": True}))
    await driver.connect()
    try:
        for _ in range(3):
            assert (await driver.read()).values == {"a": 9}
            assert not driver.bus.connected
    finally:
        await driver.close()


async def test_read_subset_and_unknown_tag(server: SimServer) -> None:
    server.set_registers(1, "hr", 1, [1, 2, 3])
    tags = [{"name": f"t{i}", "address": f"HR{i}"} for i in (1, 2, 3)]
    driver = make_driver(device(server.port, tags))
    await driver.connect()
    try:
        sample = await driver.read(["t3", "nope"])
    finally:
        await driver.close()
    assert sample.values == {"t3": 3, "nope": None}
    assert sample.bad == {"nope": "no such tag"}


async def test_pause_keeps_the_link_quiet_between_requests(server: SimServer) -> None:
    tags = [{"name": f"r{a}", "address": f"HR{a}"} for a in (0, 50, 90)]
    sent: list[float] = []
    driver = make_driver(device(server.port, tags, max_gap=0,
                                connection={"pause": "60ms"}))
    await driver.connect()
    try:
        client = driver.bus._client
        client.ctx.trace_pdu = on_send(lambda _: sent.append(time.monotonic()))
        sample = await driver.read()
    finally:
        await driver.close()
    assert not sample.bad and len(sent) == 3
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 0.055, gaps


async def test_concurrent_reads_while_learning_a_split(server: SimServer) -> None:
    # A poll and a remote read of the same plan at once: both correct, plan split once.
    server.set_registers(1, "hr", 95, [5])
    server.set_registers(1, "hr", 112, [7])
    tags = [{"name": "a", "address": "HR95"}, {"name": "hole", "address": "HR104"},
            {"name": "b", "address": "HR112"}]
    driver = make_driver(device(server.port, tags, max_gap=20))
    await driver.connect()
    try:
        s1, s2 = await asyncio.gather(driver.read(), driver.read())
        plan = [str(b) for b in driver.planner.plan()]
    finally:
        await driver.close()
    for s in (s1, s2):
        assert s.values == {"a": 5, "hole": None, "b": 7}
        assert list(s.bad) == ["hole"]
    assert sorted(plan) == ["HR104+1", "HR112+1", "HR95+1"]
