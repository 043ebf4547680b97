"""Options of a Modbus device: what the site YAML may say, with defaults and bounds.

Imported by ``edge-agent check``: pydantic only, never pymodbus.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from agent.sdk.driver import DeviceConfig, StrictModel, TagConfig
from agent.sdk.types import Duration
from drivers.modbus.addressing import Address, BaseName, parse_address

__all__ = [
    "AsciiConnection",
    "Connection",
    "ModbusDevice",
    "ModbusTag",
    "RtuConnection",
    "RtuOverTcpConnection",
    "SerialConnection",
    "TagType",
    "TcpConnection",
]

TagType = Literal[
    "bool", "bit", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float32", "float64", "string",
]
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]

#: Registers each type occupies (string: ``length``).
TYPE_REGISTERS: dict[str, int] = {
    "bool": 1, "bit": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2,
    "int64": 4, "uint64": 4, "float32": 2, "float64": 4,
}


class _LinkOptions(StrictModel):
    """Robustness options every transport has."""

    unit: int = Field(1, ge=0, le=255, description="Unit id (slave address) of the device")
    timeout: Duration = Field(1.0, gt=0, le=60, description="Wait this long for an answer")
    retries: int = Field(1, ge=0, le=10, description="Extra attempts after a timeout")
    pause: Duration = Field(
        0.0, ge=0, le=10, description="Quiet time on the link before each request to this device"
    )
    close_after_scan: bool = Field(
        False, description="Close the connection after every scan (devices that allow one client)"
    )
    unit_backoff_max: Duration = Field(
        60.0, ge=1, le=3600,
        description="Longest wait before probing a unit that stopped answering again",
    )


class TcpConnection(_LinkOptions):
    transport: Literal["tcp"]
    host: str = Field(min_length=1, description="IP address or host name")
    port: int = Field(502, ge=1, le=65535)


class RtuOverTcpConnection(_LinkOptions):
    """RTU frames (with CRC) over a TCP socket: serial device servers, converters."""

    transport: Literal["rtu_over_tcp"]
    host: str = Field(min_length=1, description="IP address or host name of the converter")
    port: int = Field(502, ge=1, le=65535)


class SerialConnection(_LinkOptions):
    port: str = Field(
        min_length=1, description="Serial port, e.g. /dev/ttyUSB0 or /dev/serial/by-id/..."
    )
    baudrate: int = Field(19200, ge=300, le=4_000_000)
    parity: Literal["N", "E", "O"] = Field("N", description="N (none), E (even), O (odd)")
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    @field_validator("parity", mode="before")
    @classmethod
    def _parity_words(cls, value: Any) -> Any:
        # Device manuals say "even"/"none" as often as "E"/"N".
        if isinstance(value, str):
            return {"NONE": "N", "EVEN": "E", "ODD": "O"}.get(value.upper(), value.upper())
        return value

    @field_validator("unit")
    @classmethod
    def _serial_unit(cls, value: int) -> int:
        # 0 is broadcast on a serial line (no device answers); 248-255 are reserved.
        if not 1 <= value <= 247:
            raise ValueError("a unit on a serial line is 1 to 247")
        return value


class RtuConnection(SerialConnection):
    transport: Literal["rtu"]

    @field_validator("bytesize")
    @classmethod
    def _eight_bits(cls, value: int) -> int:
        if value != 8:
            raise ValueError("RTU frames are binary: bytesize must be 8 (7 is for ascii)")
        return value


class AsciiConnection(SerialConnection):
    transport: Literal["ascii"]


TRANSPORTS = ("tcp", "rtu", "ascii", "rtu_over_tcp")


def _transport_of(value: Any) -> str | None:
    raw = value.get("transport") if isinstance(value, dict) else getattr(value, "transport", None)
    return f"transport[{raw}]" if raw in TRANSPORTS else None


# The tags are spelled "transport[...]" on purpose: the core's error mapper
# drops loc parts with brackets, so an error reads `connection.host`, not
# `connection.tcp.host`, and points at the right YAML line.
Connection = Annotated[
    Annotated[TcpConnection, Tag("transport[tcp]")]
    | Annotated[RtuOverTcpConnection, Tag("transport[rtu_over_tcp]")]
    | Annotated[RtuConnection, Tag("transport[rtu]")]
    | Annotated[AsciiConnection, Tag("transport[ascii]")],
    Discriminator(
        _transport_of,
        custom_error_type="transport",
        custom_error_message="transport: must be one of tcp, rtu, ascii, rtu_over_tcp",
    ),
]


class ModbusTag(TagConfig):
    address: str | int | float = Field(
        description="HR100, HR110.3, IR3, CO0, DI12, or Modicon 40001/400001 (one-based)"
    )
    type: TagType | None = Field(
        None, description="Default: bool for CO/DI and bits (HR110.3), uint16 for registers"
    )
    order: Order | None = Field(None, description="Byte order of multi-byte values (ABCD)")
    length: int | None = Field(None, ge=1, le=125, description="Registers of a string")
    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = Field(0.0, description="value = raw * scale + offset")
    map: dict[int, str | int | float | bool] | None = Field(
        None, description="Raw integer -> value (enumerations), e.g. {0: stopped, 1: running}"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | int | float) -> str | int | float:
        parse_address(value)  # syntax only; the device's `addressing` is applied later
        return value

    def parsed(self, base: BaseName = "zero_based") -> Address:
        return parse_address(self.address, base)

    @property
    def kind(self) -> str:
        """The effective type: defaults filled in."""
        if self.type is not None:
            return "bool" if self.type == "bit" else self.type
        addr = parse_address(self.address)
        return "bool" if addr.is_bit_table or addr.bit is not None else "uint16"

    @property
    def registers(self) -> int:
        if self.kind == "string":
            return self.length or 0
        return TYPE_REGISTERS[self.kind]

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTag:
        addr = parse_address(self.address)
        kind = self.kind
        if addr.is_bit_table and kind != "bool":
            what = "coil" if addr.table == "co" else "discrete input"
            alias = f"{self.address} is {addr}, " if str(self.address) != str(addr) else ""
            raise ValueError(f"{alias}a {what} (a single bit): type must be bool, not {kind}")
        if addr.bit is not None and kind != "bool":
            raise ValueError("a register bit (like HR110.3) has type bool (or bit)")
        if self.type == "bit" and addr.bit is None:
            raise ValueError("type bit needs a bit address like HR110.3")
        if kind == "string" and self.length is None:
            raise ValueError("a string needs length: (in registers, 2 characters each)")
        if kind != "string" and self.length is not None:
            raise ValueError("length is only for type string")
        if self.order is not None and (kind == "bool" or addr.is_bit_table):
            raise ValueError("order does not apply to bits")
        scaled = self.scale != 1.0 or self.offset != 0.0
        if scaled and kind in ("bool", "string"):
            raise ValueError(f"scale/offset do not apply to {kind}")
        if self.scale == 0:
            raise ValueError("scale 0 would make every value equal to offset")
        if self.map is not None:
            if kind in ("bool", "string", "float32", "float64"):
                raise ValueError("map is for integer types (enumerations)")
            if scaled:
                raise ValueError("use either map or scale/offset, not both")
        if self.writable and addr.table in ("di", "ir"):
            raise ValueError("discrete inputs and input registers are read-only")
        if self.writable and kind == "string" and (self.length or 0) > 123:
            raise ValueError("a writable string has at most 123 registers (one FC16 write)")
        return self


class ModbusDevice(DeviceConfig):
    driver: Literal["modbus"]
    connection: Connection
    tags: list[ModbusTag] = Field(default_factory=list)
    addressing: BaseName = Field(
        "zero_based", description="How HR/IR/CO/DI numbers count: zero_based or one_based"
    )
    max_registers: int = Field(125, ge=1, le=125, description="Most registers in one read")
    max_bits: int = Field(2000, ge=1, le=2000, description="Most coils/inputs in one read")
    max_gap: int = Field(
        10, ge=0, le=124, description="Unused registers a read may span to save a request"
    )
    write_functions: Literal["single", "multiple"] = Field(
        "single",
        description="single: FC5/FC6 for one coil/register; multiple: always FC15/FC16",
    )

    @model_validator(mode="after")
    def _addresses_fit(self) -> ModbusDevice:
        for tag in self.tags:
            try:
                addr = tag.parsed(self.addressing)
            except ValueError as err:
                raise ValueError(f"tag {tag.name}: {err}") from None
            size = tag.registers if not addr.is_bit_table else 1
            if addr.offset + size > 65536:
                raise ValueError(f"tag {tag.name}: runs past address 65535")
            if size > self.max_registers:
                raise ValueError(
                    f"tag {tag.name} needs {size} registers, more than max_registers "
                    f"({self.max_registers})"
                )
        return self
