"""Every type and byte order, decoded against values a real pymodbus server holds.

The server side packs values with its own byte shuffling (SimServer.set_value),
not with the driver's codec, so a codec bug cannot cancel itself out.
"""

from __future__ import annotations

import math
from typing import Any

from drivers.modbus.simserver import SimServer
from tests.modbus.helpers_modbus import device, make_driver, read_once

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
# type, struct format, value, registers: values chosen so that every byte differs.
CASES: list[tuple[str, str, Any, int]] = [
    ("int16", ">h", -1234, 1),
    ("uint16", ">H", 0xA1B2, 1),
    ("int32", ">i", -123456789, 2),
    ("uint32", ">I", 0xA1B2C3D4, 2),
    ("int64", ">q", -1234567890123456789, 4),
    ("uint64", ">Q", 0xA1B2C3D4E5F60718, 4),
    ("float32", ">f", -1234.5, 2),
    ("float64", ">d", math.pi, 4),
    ("string", ">8s", b"PUMP-7", 4),
]


async def test_every_type_in_every_order(server: SimServer) -> None:
    tags: list[dict[str, Any]] = []
    expected: dict[str, Any] = {}
    address = 1000
    for order in ORDERS:
        for kind, fmt, value, size in CASES:
            name = f"{kind}_{order}"
            server.set_value(1, "hr", address, fmt, value, order)
            tag: dict[str, Any] = {"name": name, "address": f"HR{address}", "type": kind,
                                   "order": order}
            if kind == "string":
                tag["length"] = size
            tags.append(tag)
            expected[name] = value.decode() if isinstance(value, bytes) else value
            address += size
    driver = make_driver(device(server.port, tags))
    await driver.connect()
    try:
        sample = await driver.read()
    finally:
        await driver.close()
    assert sample.bad == {}
    assert sample.values == expected
    # 9 types x 4 orders = 116 registers: one request.
    assert len(driver.planner.plan(None)) == 1


async def test_bits_bools_scale_offset_map(server: SimServer) -> None:
    server.set_registers(1, "hr", 110, [0b1000_0000_0000_1000])
    server.set_bit(1, "co", 5, True)
    server.set_bit(1, "di", 7, True)
    server.set_registers(1, "hr", 20, [215, 0, 2, 7, 0xFFFF])
    server.set_registers(1, "ir", 3, [5000])
    tags: list[dict[str, Any]] = [
        {"name": "b3", "address": "HR110.3"},
        {"name": "b15", "address": "HR110.15", "type": "bit"},
        {"name": "b4", "address": "HR110.4"},
        {"name": "coil5", "address": "CO5"},
        {"name": "coil6", "address": "CO6"},
        {"name": "di7", "address": "DI7", "type": "bool"},
        {"name": "reg_bool", "address": "HR20", "type": "bool"},
        {"name": "temp", "address": "HR20", "type": "int16", "scale": 0.1, "offset": -1.5},
        {"name": "state", "address": "HR22", "map": {0: "stopped", 2: "running"}},
        {"name": "state_unknown", "address": "HR23", "map": {0: "stopped"}},
        {"name": "neg", "address": "HR24", "type": "int16", "scale": 0.5},
        {"name": "freq", "address": "IR3", "scale": 0.01},
    ]
    sample = await read_once(server.port, tags)
    assert sample.values == {
        "b3": True, "b15": True, "b4": False, "coil5": True, "coil6": False, "di7": True,
        "reg_bool": True, "temp": 20.0, "state": "running", "state_unknown": None,
        "neg": -0.5, "freq": 50.0,
    }
    assert sample.bad == {"state_unknown": "value 7 not in map"}


async def test_nan_and_inf_are_bad_not_values(server: SimServer) -> None:
    server.set_value(1, "hr", 30, ">f", float("nan"))
    server.set_value(1, "hr", 32, ">d", float("inf"))
    server.set_value(1, "hr", 36, ">f", 1.5)
    tags: list[dict[str, Any]] = [
        {"name": "nan", "address": "HR30", "type": "float32"},
        {"name": "inf", "address": "HR32", "type": "float64"},
        {"name": "ok", "address": "HR36", "type": "float32", "scale": 2},
    ]
    sample = await read_once(server.port, tags)
    assert sample.values == {"nan": None, "inf": None, "ok": 3.0}
    assert set(sample.bad) == {"nan", "inf"}
    assert sample.bad["nan"] == "not a finite number"


async def test_string_trimmed_and_float32_not_noisy(server: SimServer) -> None:
    server.set_value(1, "hr", 40, ">8s", b"  AB  \x00\x00")
    server.set_value(1, "hr", 44, ">f", 12.3)
    tags: list[dict[str, Any]] = [
        {"name": "s", "address": "HR40", "type": "string", "length": 4},
        {"name": "f", "address": "HR44", "type": "float32"},
    ]
    sample = await read_once(server.port, tags)
    assert sample.values == {"s": "AB", "f": 12.3}


async def test_modicon_and_one_based_addresses(server: SimServer) -> None:
    server.set_registers(1, "hr", 0, [11])
    server.set_registers(1, "hr", 10, [22])
    server.set_registers(1, "ir", 0, [33])
    server.set_bit(1, "co", 0, True)
    server.set_bit(1, "di", 1, True)
    tags: list[dict[str, Any]] = [
        {"name": "hr0", "address": 40001},
        {"name": "hr10", "address": "400011"},
        {"name": "ir0", "address": "30001"},
        {"name": "co0", "address": "00001"},
        {"name": "di1", "address": "10002"},
        {"name": "hr0_one_based", "address": "HR1"},
    ]
    driver = make_driver(device(server.port, tags, addressing="one_based"))
    await driver.connect()
    try:
        sample = await driver.read()
    finally:
        await driver.close()
    assert sample.values == {"hr0": 11, "hr10": 22, "ir0": 33, "co0": True, "di1": True,
                             "hr0_one_based": 11}
