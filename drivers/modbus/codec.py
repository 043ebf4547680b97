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
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.sdk.readings import NOT_FINITE
from drivers.modbus.options import ModbusTag

__all__ = ["BlockDecoder", "EncodeError", "RegisterDecoder", "encode_registers", "make_decoder", "parse_bool"]

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



class EncodeError(ValueError):
    """A value that cannot be written to this tag; nothing was sent."""


def _linear(scale: float, offset: float) -> Post:
    """raw * scale + offset for integers, without float noise where possible.

    With scale 1/k (0.1, 0.01, ...) and offset a multiple of it, dividing by
    k gives the correctly rounded decimal (21.5, not 21.500000000000004)
    and costs no more than the multiplication.
    """
    k = 1.0 / scale
    if abs(k - round(k)) < 1e-9 and abs(k) >= 1:
        k_int = round(k)
        shift = offset * k_int
        if abs(shift - round(shift)) < 1e-9:
            shift_int = round(shift)

            def divided(raw: Any) -> tuple[Any, str | None]:
                return (raw + shift_int) / k_int, None

            return divided

    def multiplied(raw: Any) -> tuple[Any, str | None]:
        return raw * scale + offset, None

    return multiplied


Post = Callable[[Any], tuple[Any, str | None]]


def _postprocess(tag: ModbusTag, kind: str) -> Post | None:
    """What happens to an integer after the unpack; None when nothing does.

    Floats never come here: :class:`BlockDecoder` rounds, scales and checks
    them for a whole group at once.
    """
    if kind in ("float32", "float64"):
        return None
    if tag.map is not None:
        table = dict(tag.map)

        def mapped(raw: Any) -> tuple[Any, str | None]:
            if raw in table:
                return table[raw], None
            return None, f"value {raw} not in map"

        return mapped
    if tag.scale != 1.0 or tag.offset != 0.0:
        return _linear(tag.scale, tag.offset)
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


@dataclass(slots=True)
class _Group:
    """Non-overlapping tags read by one struct unpack from one buffer."""

    unpack: Callable[[bytes, int], tuple[Any, ...]]
    swapped: bool
    names: tuple[str, ...]
    #: 0: integers as they are; 4: float32 (7 digits); 8: float64.
    real: int
    #: (scale, offset) per tag, or None when no tag of the group is scaled.
    scales: tuple[float, ...] | None
    #: offset per tag, or None when every offset is 0.
    offsets: tuple[float, ...] | None
    #: float32 value -> the same rounded to 7 significant digits.
    memo: dict[float, float] = field(default_factory=dict)


class BlockDecoder:
    """Decodes every tag of one read request with as few Python steps as possible.

    Plain integers and floats are grouped (by buffer and byte order, never
    overlapping) into one ``struct`` format with pad bytes between tags, so
    a block of 125 registers is one C call and one ``dict.update``.  Bits,
    strings, maps and scaled integers go through their :class:`RegisterDecoder`.
    """

    def __init__(self, items: list[tuple[ModbusTag, int, int | None]]) -> None:
        """``items``: (tag, register offset in the block, bit or None)."""
        self.slow: list[RegisterDecoder] = []
        self.groups: list[_Group] = []
        open_groups: dict[tuple[bool, str, int], list[list[tuple[int, str, ModbusTag]]]] = {}
        for tag, rel, bit in sorted(items, key=lambda i: i[1]):
            dec = make_decoder(tag, rel, bit)
            dec.rel = rel
            kind = tag.kind
            real = 4 if kind == "float32" else 8 if kind == "float64" else 0
            if dec.mode != "struct" or (real == 0 and dec.post is not None):
                self.slow.append(dec)
                continue
            swapped, endian = _LAYOUT[tag.order or "ABCD"]
            lanes = open_groups.setdefault((swapped, endian, real), [])
            for lane in lanes:
                last_rel, _, last_tag = lane[-1]
                if last_rel + last_tag.registers <= rel:
                    lane.append((rel, kind, tag))
                    break
            else:
                lanes.append([(rel, kind, tag)])
        for (swapped, endian, real), lanes in open_groups.items():
            for lane in lanes:
                fmt, cursor = endian, 0
                for rel, kind, tag in lane:
                    if rel > cursor:
                        fmt += f"{2 * (rel - cursor)}x"
                    fmt += _FORMAT[kind]
                    cursor = rel + tag.registers
                tags = [t for _, _, t in lane]
                self.groups.append(_Group(
                    struct.Struct(fmt).unpack_from, swapped, tuple(t.name for t in tags), real,
                    tuple(t.scale for t in tags) if any(t.scale != 1 for t in tags) else None,
                    tuple(t.offset for t in tags) if any(t.offset for t in tags) else None,
                ))
        self.needs_swapped = any(g.swapped for g in self.groups) or any(
            d.swapped for d in self.slow
        )

    def decode(self, regs: list[int], values: dict[str, Any], bad: dict[str, str]) -> None:
        n = len(regs)
        be = struct.pack(f">{n}H", *regs)
        sw = struct.pack(f"<{n}H", *regs) if self.needs_swapped else be
        for g in self.groups:
            raws: Any = g.unpack(sw if g.swapped else be, 0)
            if g.real:
                if g.scales is not None:
                    raws = list(map(operator.mul, raws, g.scales))
                if g.offsets is not None:
                    raws = list(map(operator.add, raws, g.offsets))
                if g.real == 4:
                    # float32 carries ~7 significant digits: 12.3, not 12.300000190734863.
                    # Formatting costs ~0.2-0.6 us a value; many values repeat from
                    # poll to poll, so remember the last few thousand.
                    memo = g.memo
                    known = list(map(memo.get, raws))
                    if None in known:
                        if len(memo) > 4096:
                            memo.clear()
                        fresh = [float("%.7g" % x) for x in raws]  # noqa: UP031 - fastest
                        memo.update(zip(raws, fresh, strict=True))
                        raws = fresh
                    else:
                        raws = known
                if not all(map(math.isfinite, raws)):
                    for name, x in zip(g.names, raws, strict=True):
                        if not math.isfinite(x):
                            bad[name] = NOT_FINITE
                    raws = [x if math.isfinite(x) else None for x in raws]
            values.update(zip(g.names, raws, strict=True))
        for dec in self.slow:
            value, error = dec.decode(be, sw, regs)
            values[dec.name] = value
            if error is not None:
                bad[dec.name] = error


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
        if size > 246:
            raise EncodeError("one write (FC16) carries at most 123 registers")
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
