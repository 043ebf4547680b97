"""A pymodbus server with a known memory map, for the demo, the tests and the benchmark.

pymodbus 3.16 builds its datastore from ``SimDevice``/``SimData`` and keeps
it in ``server.context.devices[unit].block``; we read and write that memory
directly (the version is pinned to 3.16.x in pyproject.toml).  Addresses
outside the declared ranges answer "illegal data address", which is how the
tests make a merged request fail.  Units listed in ``silent`` get no answer
at all: a dead drive on the bus.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, Literal

__all__ = ["SimServer", "UnitMap"]

Table = Literal["co", "di", "hr", "ir"]
#: table -> list of (first address, count) that exist on the device.
UnitMap = Mapping[Table, Iterable[tuple[int, int]]]

_BLOCK = {"co": "c", "di": "d", "hr": "h", "ir": "i"}


def _sim_device(unit: int, layout: UnitMap) -> Any:
    from pymodbus.simulator import DataType, SimData, SimDevice

    lists: list[list[Any]] = []
    for table in ("co", "di", "hr", "ir"):
        ranges = sorted(layout.get(table, ()))
        if table in ("co", "di"):
            # Bit blocks are stored 16 to a register; pymodbus ignores count there.
            entries = [SimData(a, values=[False] * n, datatype=DataType.BITS) for a, n in ranges]
            if not entries:
                entries = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        else:
            entries = [
                SimData(a, count=n, values=0, datatype=DataType.REGISTERS) for a, n in ranges
            ]
            if not entries:
                entries = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        lists.append(entries)
    return SimDevice(id=unit, simdata=(lists[0], lists[1], lists[2], lists[3]))


class SimServer:
    """``await SimServer.tcp({1: layout})`` or ``.serial(port, {...})``; ``await stop()``."""

    def __init__(self, server: Any, framer: str) -> None:
        self.server = server
        self.framer = framer
        self.silent: set[int] = set()
        self.requests = 0
        self.port = 0

    def _trace(self, sending: bool, packet: bytes) -> bytes:
        if not packet:
            return packet
        if not sending:
            self.requests += 1
            return packet
        unit = packet[6] if self.framer == "socket" else packet[0]
        if self.framer == "ascii":
            unit = int(packet[1:3], 16)
        return b"" if unit in self.silent else packet

    @classmethod
    async def tcp(
        cls, units: Mapping[int, UnitMap], *, framer: str = "socket", port: int = 0
    ) -> SimServer:
        from pymodbus import FramerType
        from pymodbus.server import ModbusTcpServer

        devices = [_sim_device(u, layout) for u, layout in units.items()]
        self = cls(None, framer)
        self.server = ModbusTcpServer(
            devices, framer=FramerType(framer), address=("127.0.0.1", port),
            trace_packet=self._trace,
        )
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]
        return self

    @classmethod
    async def serial(
        cls, port: str, units: Mapping[int, UnitMap], *, framer: str = "rtu", baudrate: int = 19200
    ) -> SimServer:
        from pymodbus import FramerType
        from pymodbus.server import ModbusSerialServer

        devices = [_sim_device(u, layout) for u, layout in units.items()]
        self = cls(None, framer)
        self.server = ModbusSerialServer(
            devices, framer=FramerType(framer), port=port, baudrate=baudrate,
            trace_packet=self._trace,
        )
        await self.server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        await self.server.shutdown()

    def _block(self, unit: int, table: Table) -> tuple[int, int, list[int], list[int]]:
        block: tuple[int, int, list[int], list[int]] = self.server.context.devices[unit].block[
            _BLOCK[table]
        ]
        return block

    def set_registers(self, unit: int, table: Table, address: int, values: Iterable[int]) -> None:
        start, _, regs, _ = self._block(unit, table)
        for i, v in enumerate(values):
            regs[address - start + i] = v & 0xFFFF

    def registers(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        start, _, regs, _ = self._block(unit, table)
        return regs[address - start : address - start + count]

    def set_value(
        self, unit: int, table: Table, address: int, fmt: str, value: Any, order: str = "ABCD"
    ) -> None:
        """Store ``value`` packed with struct ``fmt`` (e.g. '>f') in the given byte order."""
        data = struct.pack(fmt, value)
        if order in ("DCBA", "CDAB"):
            data = data[::-1]
        if order in ("BADC", "CDAB"):
            data = b"".join(data[i + 1 : i + 2] + data[i : i + 1] for i in range(0, len(data), 2))
        self.set_registers(unit, table, address, struct.unpack(f">{len(data) // 2}H", data))

    def set_bit(self, unit: int, table: Table, address: int, value: bool) -> None:
        start, _, regs, _ = self._block(unit, table)
        i = address // 16 - start
        mask = 1 << (address % 16)
        regs[i] = (regs[i] | mask) if value else (regs[i] & ~mask)

    def bit(self, unit: int, table: Table, address: int) -> bool:
        start, _, regs, _ = self._block(unit, table)
        return bool(regs[address // 16 - start] >> (address % 16) & 1)
