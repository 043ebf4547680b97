"""OPC UA values to JSON and back.

Reading: every built-in type maps to a JSON value without loss.  Writing:
a JSON value is coerced to the node's built-in type, its range checked
(raising WriteRefused before anything is sent).

| OPC UA                      | JSON                                         |
|-----------------------------|----------------------------------------------|
| Boolean                     | true/false                                   |
| SByte..UInt64, enumerations | integer (enumerations as their numeric value)|
| Float                       | number, shortest form that round-trips float32|
| Double                      | number; NaN/Inf make the tag bad              |
| String, XmlElement          | string                                       |
| DateTime                    | ISO 8601 UTC string, microseconds: "...Z"    |
| ByteString                  | base64 string                                |
| Guid, NodeId, QualifiedName | string                                       |
| LocalizedText               | {"text": ..., "locale": ...}                 |
| StatusCode                  | its name                                     |
| arrays / matrices           | lists (nested for matrices)                  |
| structures                  | objects of their fields; unknown: type+base64|
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import math
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua

from agent.sdk.driver import WriteRefused
from agent.sdk.readings import NOT_FINITE

__all__ = ["NonFinite", "fill", "from_json", "to_json", "ts_ms"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
VT = ua.VariantType

# Integer ranges per built-in type, for writes.
_INT_RANGE: dict[ua.VariantType, tuple[int, int]] = {
    VT.SByte: (-(2**7), 2**7 - 1),
    VT.Byte: (0, 2**8 - 1),
    VT.Int16: (-(2**15), 2**15 - 1),
    VT.UInt16: (0, 2**16 - 1),
    VT.Int32: (-(2**31), 2**31 - 1),
    VT.UInt32: (0, 2**32 - 1),
    VT.Int64: (-(2**63), 2**63 - 1),
    VT.UInt64: (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38


class NonFinite(ValueError):
    """NaN or infinity: never put in a sample's values (the tag goes bad)."""


def ts_ms(dt: datetime | None) -> int | None:
    """A DataValue timestamp as integer ms since the epoch (None stays None)."""
    if dt is None:
        return None
    if dt.tzinfo is None:  # asyncua gives aware UTC; a naive one is UTC too
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


def _float32(value: float) -> float:
    # A float32 widened to double prints as 0.10000000149011612; the shortest
    # decimal that packs back to the same float32 is what the PLC "has".
    packed = struct.pack("<f", value)
    for digits in (6, 7, 8, 9):
        short = float(f"{value:.{digits}g}")
        if struct.pack("<f", short) == packed:
            return short
    return value


def _iso(dt: datetime) -> str:
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="microseconds") + "Z"


def to_json(value: Any, vtype: ua.VariantType | None = None) -> Any:
    """One OPC UA value as a JSON value; raises NonFinite for NaN/Inf."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)  # IntEnum and friends become plain numbers
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NonFinite("value is not finite")
        return _float32(value) if vtype is VT.Float else value
    if isinstance(value, list | tuple):
        return [to_json(v, vtype) for v in value]
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, ua.LocalizedText):
        return {"text": value.Text, "locale": value.Locale}
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, ua.NodeId | ua.QualifiedName):
        return value.to_string()
    if isinstance(value, ua.StatusCode):
        return value.name
    if isinstance(value, ua.Variant):
        return to_json(value.Value, value.VariantType)
    if isinstance(value, ua.ExtensionObject):
        # A structure whose type the server did not describe to us.
        return {"type_id": value.TypeId.to_string(),
                "body": base64.b64encode(value.Body or b"").decode("ascii")}
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name != "Encoding"}
    return str(value)


def _refuse(value: Any, vtype: ua.VariantType, why: str) -> WriteRefused:
    return WriteRefused(f"value {value!r} cannot be written as {vtype.name}: {why}")


def _to_int(value: Any, vtype: ua.VariantType) -> int:
    if isinstance(value, bool):
        raise _refuse(value, vtype, "a boolean is not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise _refuse(value, vtype, "not a whole number")
        value = int(value)
    if not isinstance(value, int):
        raise _refuse(value, vtype, "not a number")
    lo, hi = _INT_RANGE[vtype]
    if not lo <= value <= hi:
        raise _refuse(value, vtype, f"outside {lo}..{hi}")
    return value


def _to_float(value: Any, vtype: ua.VariantType) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(value, vtype, "not a number")
    out = float(value)
    if not math.isfinite(out):
        raise _refuse(value, vtype, "not finite")
    if vtype is VT.Float and abs(out) > _FLOAT32_MAX:
        raise _refuse(value, vtype, "outside the float32 range")
    return out


def _to_datetime(value: Any, vtype: ua.VariantType) -> datetime:
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _refuse(value, vtype, "not an ISO 8601 date-time") from None
        return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return _EPOCH + timedelta(milliseconds=value)  # ms since the epoch, as sample ts
        except (OverflowError, ValueError):
            raise _refuse(value, vtype, "outside the years 1..9999") from None
    raise _refuse(value, vtype, "expected an ISO 8601 string or epoch milliseconds")


def _scalar(value: Any, vtype: ua.VariantType) -> Any:
    if vtype in _INT_RANGE:
        return _to_int(value, vtype)
    if vtype in (VT.Float, VT.Double):
        return _to_float(value, vtype)
    if vtype is VT.Boolean:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _refuse(value, vtype, "expected true/false")
    if vtype in (VT.String, VT.XmlElement):
        if not isinstance(value, str):
            raise _refuse(value, vtype, "expected a string")
        return value
    if vtype is VT.DateTime:
        return _to_datetime(value, vtype)
    if vtype is VT.ByteString:
        if not isinstance(value, str):
            raise _refuse(value, vtype, "expected a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise _refuse(value, vtype, "not base64") from None
    if vtype is VT.LocalizedText:
        if isinstance(value, str):
            return ua.LocalizedText(value)
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            return ua.LocalizedText(value["text"], value.get("locale"))
        raise _refuse(value, vtype, 'expected a string or {"text": ..., "locale": ...}')
    if vtype is VT.Guid:
        try:
            return uuid.UUID(str(value))
        except ValueError:
            raise _refuse(value, vtype, "not a GUID") from None
    raise WriteRefused(f"writing {vtype.name} values is not supported")


def from_json(value: Any, vtype: ua.VariantType, is_array: bool) -> ua.Variant:
    """Coerce a JSON value to ``vtype`` (a list for array nodes); WriteRefused if not."""
    if is_array:
        if not isinstance(value, list):
            raise _refuse(value, vtype, "the node holds an array; give a list")
        return ua.Variant([_scalar(v, vtype) for v in value], vtype)
    if isinstance(value, list):
        raise _refuse(value, vtype, "the node holds a single value, not a list")
    return ua.Variant(_scalar(value, vtype), vtype)


_SEVERITY = 0xC0000000
_UNCERTAIN = 0x40000000


def fill(sample: Any, name: str, dv: ua.DataValue) -> None:
    """Put one DataValue into a Sample: Good -> value, Uncertain -> value and
    reason, Bad -> null and the status name."""
    code = dv.StatusCode
    severity = code.value & _SEVERITY if code is not None else 0
    if severity & 0x80000000:
        sample.values[name] = None
        sample.bad[name] = code.name if code is not None else "Bad"
        return
    variant = dv.Value
    try:
        value = None if variant is None else to_json(variant.Value, variant.VariantType)
    except NonFinite:
        sample.values[name] = None
        sample.bad[name] = NOT_FINITE
        return
    sample.values[name] = value
    if severity == _UNCERTAIN and code is not None:
        sample.uncertain[name] = code.name
