"""Modbus address forms -> (table, protocol address, bit).

Accepted forms (see README.md):

- ``HR100``, ``IR3``, ``CO0``, ``DI12``: table prefix and a protocol address
  (zero-based by default; the device option ``addressing: one_based`` makes
  ``HR1`` the first register, as many device manuals count).
- ``HR110.3``: bit 3 (0 = least significant) of a holding/input register.
- Modicon 5-digit ``00001``-``09999``, ``10001``, ``30001``, ``40001`` and
  6-digit ``000001``-``465536``: always one-based, whatever ``addressing``
  says.  A bit suffix works there too (``40001.3``).

The YAML loader keeps leading-zero forms (``00001``) as strings and gives
``40001`` as an int; both are accepted.  A float (``40001.10`` unquoted) is
refused: YAML turned ``.10`` into ``.1`` and we cannot tell which bit was
meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["TABLES", "Address", "Table", "parse_address"]

Table = Literal["co", "di", "ir", "hr"]

#: Tables in the order of their function code (1, 2, 3, 4 to read).
TABLES: tuple[Table, ...] = ("co", "di", "hr", "ir")

_PREFIX: dict[str, Table] = {"CO": "co", "DI": "di", "IR": "ir", "HR": "hr"}
# First digit of a Modicon reference: 0xxxx coils, 1xxxx discrete inputs,
# 3xxxx input registers, 4xxxx holding registers (2xxxx was never used).
_MODICON: dict[str, Table] = {"0": "co", "1": "di", "3": "ir", "4": "hr"}

_PREFIXED = re.compile(r"^(CO|DI|IR|HR)(\d{1,5})(?:\.(\d{1,2}))?$", re.IGNORECASE)
_NUMERIC = re.compile(r"^(\d{5,6})(?:\.(\d{1,2}))?$")

BaseName = Literal["zero_based", "one_based"]


@dataclass(frozen=True, slots=True)
class Address:
    table: Table
    #: Protocol (on-the-wire, zero-based) address.
    offset: int
    #: Bit of a register (0-15), or None.
    bit: int | None = None

    @property
    def is_bit_table(self) -> bool:
        return self.table in ("co", "di")

    def __str__(self) -> str:
        bit = "" if self.bit is None else f".{self.bit}"
        return f"{self.table.upper()}{self.offset}{bit}"


def parse_address(raw: str | int | float, base: BaseName = "zero_based") -> Address:
    """Parse one address form; raise ValueError with a message for a technician."""
    if isinstance(raw, bool):
        raise ValueError("an address like HR100, CO0, IR3 or 40001 is needed here")
    if isinstance(raw, float):
        raise ValueError(
            f"{raw!r} was read as a number: put the address in quotes (e.g. '40001.10')"
        )
    if isinstance(raw, int):
        if raw < 10000:
            raise ValueError(
                f"{raw} is ambiguous: write it with its table (HR{raw}, IR{raw}, CO{raw}, "
                f"DI{raw}) or as a 5/6-digit Modicon number (e.g. 40001)"
            )
        text = str(raw)
    else:
        text = raw.strip()
    bit: int | None
    match = _PREFIXED.match(text)
    if match:
        table = _PREFIX[match.group(1).upper()]
        number = int(match.group(2))
        bit = None if match.group(3) is None else int(match.group(3))
        offset = number - 1 if base == "one_based" else number
        if offset < 0:
            raise ValueError(f"{text}: with addressing: one_based the first address is 1")
    else:
        match = _NUMERIC.match(text)
        if not match:
            raise ValueError(
                f"{text!r} is not a Modbus address: use HR100, HR110.3, IR3, CO0, DI12 "
                "or a Modicon number like 40001 / 400001"
            )
        digits = match.group(1)
        bit = None if match.group(2) is None else int(match.group(2))
        kind = _MODICON.get(digits[0])
        if kind is None:
            raise ValueError(
                f"{text}: a Modicon number starts with 0 (coil), 1 (discrete input), "
                "3 (input register) or 4 (holding register)"
            )
        table = kind
        number = int(digits[1:])
        if number < 1:
            raise ValueError(f"{text}: Modicon numbers are one-based ({digits[0]}0001 is first)")
        offset = number - 1
    if offset > 65535:
        raise ValueError(f"{text}: beyond the last Modbus address (65535)")
    if bit is not None:
        if table in ("co", "di"):
            raise ValueError(f"{text}: coils and discrete inputs are bits already; drop .{bit}")
        if bit > 15:
            raise ValueError(f"{text}: a register has bits 0 to 15")
    return Address(table, offset, bit)
