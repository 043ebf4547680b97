"""Sparkplug datatypes: from a tag's declared type (or a value) to the wire.

Pure Python: no protobuf here, so ``edge-agent check`` and the JSON format
never load it. ``value_field`` says which member of the Metric ``value``
oneof carries a datatype and how the Python value is put there.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

__all__ = [
    "ARRAY_OF",
    "BOOLEAN",
    "DOUBLE",
    "INT32",
    "INT64",
    "STRING",
    "UINT64",
    "NoFit",
    "datatype_of_tag",
    "datatype_of_value",
    "fitter",
    "wire_value",
]

# Datatype numbers of the specification (Payload.Metric.datatype).
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
INT8_ARRAY, INT16_ARRAY, INT32_ARRAY, INT64_ARRAY = 22, 23, 24, 25
UINT8_ARRAY, UINT16_ARRAY, UINT32_ARRAY, UINT64_ARRAY = 26, 27, 28, 29
FLOAT_ARRAY, DOUBLE_ARRAY, BOOLEAN_ARRAY, STRING_ARRAY = 30, 31, 32, 33

#: A tag's declared ``type`` (Modbus and serial names) -> Sparkplug datatype.
_DECLARED: dict[str, int] = {
    "bool": BOOLEAN,
    "bit": BOOLEAN,
    "int16": INT16,
    "uint16": UINT16,
    "int32": INT32,
    "uint32": UINT32,
    "int64": INT64,
    "uint64": UINT64,
    "float32": FLOAT,
    "float64": DOUBLE,
    "float": DOUBLE,   # serial: parsed text, a Python float (double)
    "int": INT64,      # serial: parsed text, any size
    "string": STRING,
}
_INTEGERS = {INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64}

#: Scalar datatype -> its array datatype (lists, e.g. OPC UA arrays).
ARRAY_OF: dict[int, int] = {
    INT8: INT8_ARRAY, INT16: INT16_ARRAY, INT32: INT32_ARRAY, INT64: INT64_ARRAY,
    UINT8: UINT8_ARRAY, UINT16: UINT16_ARRAY, UINT32: UINT32_ARRAY, UINT64: UINT64_ARRAY,
    FLOAT: FLOAT_ARRAY, DOUBLE: DOUBLE_ARRAY, BOOLEAN: BOOLEAN_ARRAY, STRING: STRING_ARRAY,
}
# Little-endian struct codes of the fixed-width array element types.
_ARRAY_CODE = {
    INT8_ARRAY: "b", INT16_ARRAY: "h", INT32_ARRAY: "i", INT64_ARRAY: "q",
    UINT8_ARRAY: "B", UINT16_ARRAY: "H", UINT32_ARRAY: "I", UINT64_ARRAY: "Q",
    FLOAT_ARRAY: "f", DOUBLE_ARRAY: "d",
}


def _map_datatype(values: list[Any]) -> int:
    if values and all(isinstance(v, bool) for v in values):
        return BOOLEAN
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return INT64
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return DOUBLE
    return STRING


def datatype_of_tag(tag: Any) -> int | None:
    """The datatype a tag's options declare, or None when only a value can tell.

    Drivers name types their own way; the core reads the common names
    (``kind`` is the Modbus effective type with defaults filled in). A
    ``map`` decides by its values; ``scale``/``offset`` make a number a double.
    """
    mapping = getattr(tag, "map", None)
    if isinstance(mapping, dict) and mapping:
        return _map_datatype(list(mapping.values()))
    declared = getattr(tag, "kind", None) or getattr(tag, "type", None)
    datatype = _DECLARED.get(declared) if isinstance(declared, str) else None
    if datatype is None:
        return None
    scaled = getattr(tag, "scale", 1.0) != 1.0 or getattr(tag, "offset", 0.0) != 0.0
    if scaled and datatype in _INTEGERS | {FLOAT}:
        return DOUBLE
    return datatype


def datatype_of_value(value: Any) -> int | None:
    """The natural datatype of a value (for tags that declare none); None for None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64 if value < 2**63 else UINT64
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, list):
        inner = {datatype_of_value(v) for v in value} - {None}
        if inner == {INT64, DOUBLE}:
            inner = {DOUBLE}
        scalar = inner.pop() if len(inner) == 1 else (DOUBLE if not inner else STRING)
        return ARRAY_OF.get(scalar or STRING, STRING_ARRAY)
    return STRING


def _int32(v: Any) -> int:
    # Signed values travel in the unsigned fields as their two's complement
    # (sign-extended to the field's width), as the reference implementation does.
    return int(v) & 0xFFFFFFFF


def _int64(v: Any) -> int:
    return int(v) & 0xFFFFFFFFFFFFFFFF


def _float(v: Any) -> float:
    return float(v)


def _bool(v: Any) -> bool:
    return bool(v)


def _text(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def _bool_array(values: list[Any]) -> bytes:
    # A 4-byte little-endian count, then the bits packed MSB first.
    out = bytearray(struct.pack("<I", len(values)))
    for i in range(0, len(values), 8):
        byte = 0
        for j, v in enumerate(values[i : i + 8]):
            if v:
                byte |= 0x80 >> j
        out.append(byte)
    return bytes(out)


def _array(datatype: int) -> Callable[[Any], bytes]:
    if datatype == BOOLEAN_ARRAY:
        return lambda v: _bool_array(list(v))
    if datatype == STRING_ARRAY:
        return lambda v: b"".join(_text(s).encode() + b"\0" for s in v)
    code = _ARRAY_CODE[datatype]
    if code in "fd":
        return lambda v: struct.pack(f"<{len(v)}{code}", *(float(x) for x in v))
    return lambda v: struct.pack(f"<{len(v)}{code}", *(int(x) for x in v))


#: datatype -> (Metric oneof field, converter).
_FIELDS: dict[int, tuple[str, Callable[[Any], Any]]] = {
    INT8: ("int_value", _int32), INT16: ("int_value", _int32), INT32: ("int_value", _int32),
    UINT8: ("int_value", _int32), UINT16: ("int_value", _int32), UINT32: ("int_value", _int32),
    INT64: ("long_value", _int64), UINT64: ("long_value", _int64),
    FLOAT: ("float_value", _float), DOUBLE: ("double_value", _float),
    BOOLEAN: ("boolean_value", _bool), STRING: ("string_value", _text),
    **{a: ("bytes_value", _array(a)) for a in (*_ARRAY_CODE, BOOLEAN_ARRAY, STRING_ARRAY)},
}


class NoFit(ValueError):
    """A value that cannot travel as the metric's datatype."""


def _fit_int(convert: Callable[[Any], int]) -> Callable[[Any], int]:
    def fit(v: Any) -> int:
        kind = type(v)
        if kind is int:
            return convert(v)
        if kind is float and math.isfinite(v) and v == int(v):
            return convert(int(v))
        raise NoFit(v)
    return fit


def _fit_float(v: Any) -> float:
    kind = type(v)
    if kind is float or kind is int:
        return float(v)
    raise NoFit(v)


def _fit_array(convert: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def fit(v: Any) -> bytes:
        if type(v) is not list:
            raise NoFit(v)
        try:
            return convert(v)
        except (ValueError, TypeError, struct.error, OverflowError):
            raise NoFit(v) from None
    return fit


def fitter(datatype: int) -> tuple[str, Callable[[Any], Any]]:
    """(oneof field, fit) for a datatype; ``fit(value)`` converts or raises NoFit.

    Built once per tag at birth, so the data path does one call per reading.
    """
    field, convert = _FIELDS.get(datatype, ("string_value", _text))
    if field in ("int_value", "long_value"):
        return field, _fit_int(convert)
    if field in ("float_value", "double_value"):
        return field, _fit_float
    if field == "bytes_value":
        return field, _fit_array(convert)
    return field, convert


def wire_value(datatype: int, value: Any) -> tuple[str, Any] | None:
    """(oneof field, value) for a metric, or None when the value cannot be that type.

    A non-finite number for an integer type, text for a number: None (the
    caller sends the metric as null, quality bad) rather than a wrong value.
    """
    field, fit = fitter(datatype)
    try:
        return field, fit(value)
    except NoFit:
        return None
