"""Registers <-> values: every type, the four byte orders, scale/offset, map.

Byte orders name where the bytes of the value (A = most significant) sit on
the wire.  For each block we build two byte strings once: the registers as
sent (``be``) and with the two bytes of every register swapped (``sw``).
Every type and order is then a single ``struct`` unpack from one of them:

========  ========  ======  ================================================
order     buffer    endian  why
========  ========  ======  ================================================
ABCD      be        >       the wire is the value, big-endian
DCBA      be        <       the wire is the value reversed: little-endian
BADC      sw        >       swapping each register's bytes restores ABCD
CDAB      sw        <       swapped CDAB reads DCBA: little-endian
========  ========  ======  ================================================

This holds for 16-, 32- and 64-bit types alike (CDAB on 64 bits means the
registers come least significant first, as most "word swapped" devices do).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from drivers.modbus.options import ModbusTag

__all__ = ["EncodeError", "RegisterDecoder", "encode_registers", "make_decoder", "parse_bool"]

_FORMAT = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "int64": "q", "uint64": "Q", "float32": "f", "float64": "d",
}
_RANGE = {
    "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38
# (uses swapped buffer, little-endian) per order; see the module docstring.
_LAYOUT = {"ABCD": (False, ">"), "DCBA": (False, "<"), "BADC": (True, ">"), "CDAB": (True, "<")}

NOT_FINITE = "not a finite number (NaN/Inf)"


class EncodeError(ValueError):
    """A value that cannot be written to this tag; nothing was sent."""


def _decimals(x: float) -> int:
    exponent = Decimal(repr(x)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


Post = Callable[[Any], tuple[Any, str | None]]


def _postprocess(tag: ModbusTag, kind: str) -> Post | None:
    """What happens after the raw unpack; None when nothing does (the fast path)."""
    if tag.map is not None:
        table = dict(tag.map)

        def mapped(raw: Any) -> tuple[Any, str | None]:
            if raw in table:
                return table[raw], None
            return None, f"value {raw} not in map"

        return mapped
    scaled = tag.scale != 1.0 or tag.offset != 0.0
    if kind in ("float32", "float64"):
        scale, offset, single = tag.scale, tag.offset, kind == "float32"

        def real(raw: Any) -> tuple[Any, str | None]:
            if not math.isfinite(raw):
                return None, NOT_FINITE
            if single:
                # float32 has ~7 significant digits; 12.3 must not read 12.300000190734863.
                raw = float(f"{raw:.7g}")
            value = raw * scale + offset if scaled else raw
            return (value, None) if math.isfinite(value) else (None, NOT_FINITE)

        return real
    if scaled:
        scale, offset = tag.scale, tag.offset
        digits = min(12, max(_decimals(scale), _decimals(offset)))

        def linear(raw: Any) -> tuple[Any, str | None]:
            return round(raw * scale + offset, digits), None

        return linear
    return None


@dataclass(slots=True)
class RegisterDecoder:
    """Decodes one tag from a block of registers; ``rel`` is set per block."""

    name: str
    address: int
    #: "struct", "string", "bool", "bit"
    mode: str
    rel: int = 0
    unpack: Callable[[bytes, int], tuple[Any, ...]] | None = None
    swapped: bool = False
    reverse: bool = False
    size: int = 1
    bit: int = 0
    post: Post | None = None

    def decode(self, be: bytes, sw: bytes, regs: list[int]) -> tuple[Any, str | None]:
        mode = self.mode
        if mode == "struct":
            assert self.unpack is not None
            raw = self.unpack(sw if self.swapped else be, self.rel * 2)[0]
        elif mode == "bit":
            return (regs[self.rel] >> self.bit) & 1 == 1, None
        elif mode == "bool":
            return regs[self.rel] != 0, None
        else:
            buf = sw if self.swapped else be
            data = buf[self.rel * 2 : (self.rel + self.size) * 2]
            if self.reverse:
                data = data[::-1]
            return data.split(b"\x00", 1)[0].decode("utf-8", "replace").strip(" "), None
        post = self.post
        return (raw, None) if post is None else post(raw)


def make_decoder(tag: ModbusTag, address: int, bit: int | None) -> RegisterDecoder:
    """A decoder for a register tag (coils/inputs need none: they are bools)."""
    kind = tag.kind
    order = tag.order or "ABCD"
    swapped, endian = _LAYOUT[order]
    if kind == "bool":
        if bit is not None:
            return RegisterDecoder(tag.name, address, "bit", bit=bit)
        return RegisterDecoder(tag.name, address, "bool")
    if kind == "string":
        # Strings: ABCD as sent, BADC bytes swapped per register; CDAB/DCBA
        # take the registers in reverse order.
        return RegisterDecoder(
            tag.name, address, "string", swapped=swapped, reverse=endian == "<",
            size=tag.length or 1,
        )
    fmt = struct.Struct(endian + _FORMAT[kind])
    return RegisterDecoder(
        tag.name, address, "struct", unpack=fmt.unpack_from, swapped=swapped,
        size=fmt.size // 2, post=_postprocess(tag, kind),
    )


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("true", "on", "1"):
            return True
        if word in ("false", "off", "0"):
            return False
    raise EncodeError(f"{value!r} is not a boolean (true/false, on/off, 1/0)")


def _number(value: Any) -> float | int:
    if isinstance(value, bool):
        raise EncodeError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                return float(value.strip())
            except ValueError:
                pass
    raise EncodeError(f"{value!r} is not a number")


def _raw_value(tag: ModbusTag, kind: str, value: Any) -> int | float:
    """Engineering value -> the raw number the device stores (undo map/scale)."""
    if tag.map is not None:
        for raw, label in tag.map.items():
            if label == value or (isinstance(value, str) and str(label) == value):
                return raw
        number = _number(value) if not isinstance(value, str) or value.strip() else None
        if number is not None and number in tag.map:
            return int(number)
        raise EncodeError(f"{value!r} is none of {', '.join(map(str, tag.map.values()))}")
    number = _number(value)
    if not math.isfinite(number):
        raise EncodeError(f"{value!r} is not finite")
    if tag.scale != 1.0 or tag.offset != 0.0:
        number = (number - tag.offset) / tag.scale
    if kind in _RANGE:
        rounded = round(number)
        if abs(number - rounded) > 1e-6 * max(1.0, abs(number)):
            step = f" (steps of {tag.scale})" if tag.scale != 1.0 else ""
            raise EncodeError(f"{value!r} cannot be stored exactly as {kind}{step}")
        lo, hi = _RANGE[kind]
        if not lo <= rounded <= hi:
            raise EncodeError(f"{value!r} is outside the range of {kind} ({lo}..{hi})")
        return rounded
    if kind == "float32" and abs(number) > _FLOAT32_MAX:
        raise EncodeError(f"{value!r} is outside the range of float32")
    return float(number)


def _to_registers(data: bytes, swapped: bool) -> list[int]:
    return list(struct.unpack(f"{'<' if swapped else '>'}{len(data) // 2}H", data))


def encode_registers(tag: ModbusTag, value: Any) -> list[int]:
    """Value -> registers to write (the inverse of decoding); raise EncodeError."""
    kind = tag.kind
    swapped, endian = _LAYOUT[tag.order or "ABCD"]
    if kind == "bool":
        return [1 if parse_bool(value) else 0]
    if kind == "string":
        if not isinstance(value, str):
            raise EncodeError(f"{value!r} is not a string")
        size = (tag.length or 1) * 2
        data = value.encode("utf-8")
        if len(data) > size:
            raise EncodeError(f"{value!r} is longer than {size} bytes")
        data = data.ljust(size, b"\x00")
        if endian == "<":
            data = data[::-1]
        return _to_registers(data, swapped)
    raw = _raw_value(tag, kind, value)
    data = struct.pack(endian + _FORMAT[kind], raw)
    return _to_registers(data, swapped)
