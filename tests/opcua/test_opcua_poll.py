# asyncua annotates its constructors with NewTypes (ua.Int16, ua.String, ...) and
# re-exports without __all__; plain ints/strs are what it takes at run time.
# mypy: disable-error-code="arg-type, attr-defined, method-assign, call-overload"
"""Poll mode against a real asyncua server: types, statuses, chunking, writes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua

from agent.sdk.driver import DriverError, WriteRefused
from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.simulator import SimServer, start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")
NS = "urn:edge-agent:demo"
VT = ua.VariantType
STAMP = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
GUID = uuid.UUID("12345678-1234-5678-1234-567812345678")

# name -> (type, value on the server, JSON value we expect)
TYPES: dict[str, tuple[ua.VariantType, Any, Any]] = {
    "Bool": (VT.Boolean, True, True),
    "SByte": (VT.SByte, -5, -5),
    "Byte": (VT.Byte, 200, 200),
    "Int16": (VT.Int16, -32768, -32768),
    "UInt16": (VT.UInt16, 65535, 65535),
    "Int32": (VT.Int32, -(2**31), -(2**31)),
    "UInt32": (VT.UInt32, 2**32 - 1, 2**32 - 1),
    "Int64": (VT.Int64, -(2**63), -(2**63)),
    "UInt64": (VT.UInt64, 2**64 - 1, 2**64 - 1),
    "Float": (VT.Float, 0.1, 0.1),
    "Double": (VT.Double, 1 / 3, 1 / 3),
    "String": (VT.String, "grüße ✓", "grüße ✓"),
    "DateTime": (VT.DateTime, STAMP, "2024-05-01T12:30:15.123456Z"),
    "Bytes": (VT.ByteString, b"\x00\xffab", "AP9hYg=="),
    "Guid": (VT.Guid, GUID, str(GUID)),
    "Text": (VT.LocalizedText, ua.LocalizedText("Hallo", "de"), {"text": "Hallo", "locale": "de"}),
    "Doubles": (VT.Double, [1.5, -2.0, 3.25], [1.5, -2.0, 3.25]),
    "Ints": (VT.Int32, [1, 2, 3], [1, 2, 3]),
    "Setpoint": (VT.Int16, 100, 100),
    "Status": (VT.Double, 1.0, 1.0),
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim() -> AsyncIterator[SimServer]:
    server = await start_server(variables={k: (t, v) for k, (t, v, _) in TYPES.items()})
    # An enumeration (ServerState) and a node the server will not let us write.
    folder = server.server.get_node(ua.NodeId("Plant", server.ns))
    enum = await folder.add_variable(ua.NodeId("Enum", server.ns), "Enum",
                                     ua.Variant(3, VT.Int32), datatype=ua.NodeId(852))
    await enum.set_writable()
    server.nodes["Enum"] = enum
    server.nodes["ReadOnly"] = await folder.add_variable(ua.NodeId("ReadOnly", server.ns),
                                                         "ReadOnly", 7.0)
    yield server
    await server.stop()


def tags(*names: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": n, "node": f"nsu={NS};s={n}", **extra} for n in names]


async def test_every_type_reads_as_lossless_json(
    sim: SimServer, context: Any, make_device: Any
) -> None:
    drv = OpcuaDriver(make_device(sim.endpoint, tags(*TYPES, "Enum"), mode="poll"), context)
    await drv.connect()
    try:
        sample = await drv.read()
    finally:
        await drv.close()
    expected = {name: json for name, (_, _, json) in TYPES.items()} | {"Enum": 3}
    assert sample.values == expected
    assert sample.bad == {} and sample.uncertain == {}
    assert list(sample.values) == [*TYPES, "Enum"]  # configured order


async def test_status_maps_to_quality(
    sim: SimServer, context: Any, make_device: Any
) -> None:
    drv = OpcuaDriver(make_device(sim.endpoint, [
        *tags("Status", "Double", "Float"),
        {"name": "missing", "node": f"nsu={NS};s=NoSuchNode"},
        {"name": "foreign", "node": "nsu=urn:not-here;s=X"},
    ], mode="poll"), context)
    await drv.connect()
    try:
        await sim.set("Status", 5.0, VT.Double, status=ua.StatusCodes.BadSensorFailure)
        await sim.set("Double", 2.5, VT.Double, status=ua.StatusCodes.UncertainLastUsableValue)
        await sim.set("Float", float("nan"), VT.Float)
        sample = await drv.read()
    finally:
        await sim.set("Status", 1.0, VT.Double)
        await sim.set("Double", 1 / 3, VT.Double)
        await sim.set("Float", 0.1, VT.Float)
        await drv.close()
    assert sample.values == {"Status": None, "Double": 2.5, "Float": None,
                             "missing": None, "foreign": None}
    assert sample.bad == {"Status": "BadSensorFailure", "Float": "not a finite number",
                          "missing": "BadNodeIdUnknown",
                          "foreign": "namespace urn:not-here is not on the server"}
    assert sample.uncertain == {"Double": "UncertainLastUsableValue"}


async def test_scan_is_split_at_max_nodes_per_read(
    sim: SimServer, context: Any, make_device: Any
) -> None:
    limits = ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead
    limit = sim.server.get_node(limits)
    await limit.write_value(ua.Variant(4, VT.UInt32))
    sizes: list[int] = []
    service = sim.server.iserver.attribute_service
    original = service.read

    def counting_read(params: Any, *args: Any) -> Any:  # instruments the peer, not the client
        sizes.append(len(params.NodesToRead))
        return original(params, *args)

    service.read = counting_read
    names = [n for n in TYPES if n != "Status"]
    drv = OpcuaDriver(make_device(sim.endpoint, tags(*names), mode="poll"), context)
    try:
        await drv.connect()
        sizes.clear()
        sample = await drv.read()
    finally:
        service.read = original
        await limit.write_value(ua.Variant(10000, VT.UInt32))
        await drv.close()
    assert sizes == [4, 4, 4, 4, 3]  # 19 nodes, one Read per chunk, none above the limit
    assert sample.bad == {} and len(sample.values) == 19


async def test_read_of_selected_tags(
    sim: SimServer, context: Any, make_device: Any
) -> None:
    cfg = make_device(sim.endpoint, tags("Bool", "Int16", "String"), mode="poll")
    drv = OpcuaDriver(cfg, context)
    await drv.connect()
    try:
        sample = await drv.read(["String", "Bool"])
        with pytest.raises(DriverError, match="no tag 'nope'"):
            await drv.read(["nope"])
    finally:
        await drv.close()
    assert sample.values == {"String": "grüße ✓", "Bool": True}


async def test_writes_coerce_check_range_and_read_back(
    sim: SimServer, context: Any, make_device: Any
) -> None:
    writable = [
        *tags("Setpoint", "Float", "Doubles", "DateTime", "Bool", "Enum", "Bytes", "UInt64",
              writable=True),
        {"name": "ro", "node": f"nsu={NS};s=ReadOnly", "writable": True},
    ]
    drv = OpcuaDriver(make_device(sim.endpoint, writable, mode="poll"), context)
    await drv.connect()
    try:
        assert await drv.write("Setpoint", 250) == 250
        assert await drv.write("Setpoint", 12.0) == 12  # a whole float is an integer
        variant = (await sim.nodes["Setpoint"].read_data_value()).Value
        assert variant is not None and variant.VariantType == VT.Int16
        for bad, why in [(40000, "outside -32768..32767"), (1.5, "not a whole number"),
                         (True, "a boolean is not a number"), ("7", "not a number")]:
            with pytest.raises(WriteRefused, match=why):
                await drv.write("Setpoint", bad)
        assert await drv.write("Float", 2.5) == 2.5
        with pytest.raises(WriteRefused, match="float32 range"):
            await drv.write("Float", 1e39)
        assert await drv.write("Doubles", [1, 2.5]) == [1.0, 2.5]
        with pytest.raises(WriteRefused, match="give a list"):
            await drv.write("Doubles", 1.0)
        assert await drv.write("DateTime", "2025-01-02T03:04:05Z") == "2025-01-02T03:04:05.000000Z"
        assert await drv.write("Bool", 0) is False
        assert await drv.write("Enum", 1) == 1
        assert await drv.write("Bytes", "AQI=") == "AQI="
        assert await drv.write("UInt64", 2**64 - 1) == 2**64 - 1
        with pytest.raises(WriteRefused, match=r"outside 0\.\.18446744073709551615"):
            await drv.write("UInt64", -1)
        with pytest.raises(DriverError, match="refused the write: Bad"):
            await drv.write("ro", 1.0)
    finally:
        await drv.close()
    assert (await sim.nodes["Setpoint"].read_value()) == 12


async def test_a_stricter_real_limit_lowers_the_chunk_size(
    sim: SimServer, context: Any, make_device: Any
) -> None:
    from asyncua.common.utils import ServiceError

    service = sim.server.iserver.attribute_service
    original = service.read
    sizes: list[int] = []

    def strict_read(params: Any, *args: Any) -> Any:  # a server that under-reports its limit
        sizes.append(len(params.NodesToRead))
        if len(params.NodesToRead) > 8:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)
        return original(params, *args)

    names = [n for n in TYPES if n != "Status"]
    drv = OpcuaDriver(make_device(sim.endpoint, tags(*names), mode="poll"), context)
    await drv.connect()
    service.read = strict_read
    try:
        first = await drv.read()
        assert set(first.bad.values()) == {"BadTooManyOperations"}
        scans = [await drv.read() for _ in range(2)]
    finally:
        service.read = original
        await drv.close()
    assert scans[-1].bad == {} and len(scans[-1].values) == 19
    assert context.counters.driver["read_limit_lowered"] == 2  # 19 -> 9 -> 4
    assert max(sizes[-5:]) <= 8
