"""Verify and strip the checksum at the end of a frame.

A verifier takes the frame bytes and returns the data without the checksum
(and its separator), or a drop reason: ``checksum_missing`` (the frame is
too short or has no separator / no ``*hh``) or ``checksum_bad``.

Layouts:
- ``nmea``: ``$DATA*hh``: XOR of the bytes between ``$`` (or ``!``) and ``*``,
  two hex digits.  The ``$`` stays in the data, ``*hh`` goes.
- ``xor``, ``sum`` (8-bit sum), ``lrc`` (two's complement of the 8-bit sum,
  as Modbus ASCII): one byte; ``crc16*``: two bytes.  ``format: hex`` writes
  them as 2 or 4 hex digits (either case), ``binary`` as raw bytes (CRC-16
  low byte first for crc16-modbus, as Modbus RTU sends it; high byte first
  for the others).  ``skip`` leading bytes are not covered; an optional
  ``separator`` sits between data and checksum.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from drivers.serial.options import ChecksumConfig, to_bytes

__all__ = ["CRC16", "Verifier", "compute", "make_verifier"]

# Result: the frame's data, or the reason the frame is dropped.
Verifier = Callable[[bytes], "bytes | str"]

_HEX = frozenset(b"0123456789abcdefABCDEF")


@dataclass(frozen=True)
class _Crc16:
    poly: int
    init: int
    reflected: bool
    little_endian: bool  # byte order in binary format


# The usual CRC-16 variants, by catalogue name (reveng.sourceforge.io):
CRC16 = {
    "crc16": _Crc16(0xA001, 0x0000, True, False),         # CRC-16/ARC, check 0xBB3D
    "crc16-modbus": _Crc16(0xA001, 0xFFFF, True, True),   # CRC-16/MODBUS, check 0x4B37
    "crc16-xmodem": _Crc16(0x1021, 0x0000, False, False),  # CRC-16/XMODEM, check 0x31C3
    "crc16-ccitt-false": _Crc16(0x1021, 0xFFFF, False, False),  # IBM-3740, check 0x29B1
}


@functools.cache
def _table(poly: int, reflected: bool) -> tuple[int, ...]:
    # Built once per variant: a table lookup per byte instead of 8 shifts.
    table = []
    for byte in range(256):
        if reflected:
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        else:
            crc = byte << 8
            for _ in range(8):
                crc = ((crc << 1) ^ poly) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


def _crc16(spec: _Crc16, data: bytes) -> int:
    table = _table(spec.poly, spec.reflected)
    crc = spec.init
    if spec.reflected:
        for b in data:
            crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    else:
        for b in data:
            crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
    return crc


def _xor(data: bytes) -> int:
    # Frames are at most max_length bytes: a plain loop costs microseconds.
    acc = 0
    for b in data:
        acc ^= b
    return acc


def compute(kind: str, data: bytes) -> int:
    """The checksum of ``data`` (``nmea`` is plain XOR here)."""
    if kind in ("nmea", "xor"):
        return _xor(data)
    if kind == "sum":
        return sum(data) & 0xFF
    if kind == "lrc":
        return (-sum(data)) & 0xFF
    return _crc16(CRC16[kind], data)


def _nmea(frame: bytes) -> bytes | str:
    # Tolerate trailing CR/space left by a terminator of "\n" only.
    frame = frame.rstrip(b"\r\n ")
    if len(frame) < 3 or frame[-3] != 0x2A:  # '*'
        return "checksum_missing"
    digits = frame[-2:]
    if not _HEX.issuperset(digits):
        return "checksum_bad"
    data = frame[:-3]
    covered = data[1:] if data[:1] in (b"$", b"!") else data
    if _xor(covered) != int(digits, 16):
        return "checksum_bad"
    return data


def make_verifier(config: ChecksumConfig) -> Verifier:
    """Plan once per device: the function applied to every frame."""
    if config.type == "nmea":
        return _nmea
    kind = config.type
    width = 2 if kind.startswith("crc16") else 1
    binary = config.format == "binary"
    size = width if binary else 2 * width
    sep = to_bytes(config.separator)
    skip = config.skip
    little = kind in CRC16 and CRC16[kind].little_endian

    def verify(frame: bytes) -> bytes | str:
        if len(frame) < size + len(sep) + skip:
            return "checksum_missing"
        data, tail = frame[:-size], frame[-size:]
        if sep:
            if not data.endswith(sep):
                return "checksum_missing"
            data = data[:-len(sep)]
        if binary:
            got = int.from_bytes(tail, "little" if little else "big")
        elif _HEX.issuperset(tail):
            got = int(tail, 16)
        else:
            return "checksum_bad"
        if compute(kind, data[skip:]) != got:
            return "checksum_bad"
        return data

    return verify
