# asyncua annotates its constructors with NewTypes (ua.Int16, ua.String, ...) and
# re-exports without __all__; plain ints/strs are what it takes at run time.
# mypy: disable-error-code="arg-type, attr-defined"
"""Value conversion with asyncua's own types (no server needed)."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime

import pytest
from asyncua import ua

from agent.sdk.driver import WriteRefused
from agent.sdk.readings import Sample
from drivers.opcua.convert import NonFinite, fill, from_json, to_json, ts_ms

VT = ua.VariantType


def f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def test_float32_prints_as_the_plc_shows_it() -> None:
    assert f32(0.1) != 0.1
    assert to_json(f32(0.1), VT.Float) == 0.1
    assert to_json(f32(123.456), VT.Float) == 123.456
    for odd in (1e-38, 3.4e38, -7.25e-3, 16777217.0):  # still the same float32 after printing
        assert struct.pack("<f", to_json(f32(odd), VT.Float)) == struct.pack("<f", f32(odd))
    assert to_json(0.1 + 0.2, VT.Double) == 0.1 + 0.2  # doubles untouched


def test_non_finite_never_becomes_a_value() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(NonFinite):
            to_json(bad, VT.Double)
    sample = Sample(ts=0, values={})
    fill(sample, "x", ua.DataValue(ua.Variant([1.0, math.nan], VT.Double)))
    assert sample.values == {"x": None} and sample.bad == {"x": "not a finite number"}


def test_structures_and_odd_types() -> None:
    assert to_json([[1, 2], [3, 4]], VT.Int32) == [[1, 2], [3, 4]]
    assert to_json(ua.QualifiedName("Speed", 2)) == "2:Speed"
    assert to_json(ua.NodeId("A", 2)) == "ns=2;s=A"
    assert to_json(ua.StatusCode(ua.StatusCodes.BadTimeout)) == "BadTimeout"
    assert to_json(ua.Range(0.0, 100.0)) == {"Low": 0.0, "High": 100.0}
    ext = ua.ExtensionObject(TypeId=ua.NodeId(5001, 3), Body=b"\x01")
    assert to_json(ext) == {"type_id": "ns=3;i=5001", "body": "AQ=="}
    assert to_json(datetime(2024, 1, 1, tzinfo=UTC)) == "2024-01-01T00:00:00.000000Z"
    assert ts_ms(datetime(2024, 1, 1, 0, 0, 0, 1500, tzinfo=UTC)) == 1704067200001


def test_write_coercion() -> None:
    assert from_json(5, VT.Byte, False) == ua.Variant(5, VT.Byte)
    assert from_json("2024-01-01T00:00:00+01:00", VT.DateTime, False).Value == datetime(
        2023, 12, 31, 23, tzinfo=UTC)
    assert from_json(0, VT.DateTime, False).Value == datetime(1970, 1, 1, tzinfo=UTC)
    assert from_json({"text": "x", "locale": "de"}, VT.LocalizedText, False).Value == \
        ua.LocalizedText("x", "de")
    assert from_json([True, 1], VT.Boolean, True).Value == [True, True]
    for value, vtype, why in [
        (256, VT.Byte, "outside 0..255"), (-129, VT.SByte, "outside"),
        (math.inf, VT.Double, "not finite"), (2, VT.Boolean, "expected true/false"),
        (5, VT.String, "expected a string"), ("%%", VT.ByteString, "not base64"),
        ("x", VT.ExtensionObject, "not supported"), ([1], VT.Int16, "single value"),
        (1e20, VT.DateTime, "outside the years"), (math.nan, VT.DateTime, "outside the years"),
    ]:
        with pytest.raises(WriteRefused, match=why):
            from_json(value, vtype, False)
