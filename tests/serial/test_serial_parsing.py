"""Parsing: conversions, padding after the sign, map, scale/offset, several rules."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.serial.options import ParseRule, SerialTag
from drivers.serial.parsing import ConversionError, Parser, make_converter


def conv(**tag: Any) -> Any:
    return make_converter(SerialTag.model_validate({"name": "t", **tag}))


@pytest.mark.parametrize(("text", "value"), [
    ("+  12.345", 12.345), ("-   0.5", -0.5), (" 7 ", 7.0), ("1e3", 1000.0), ("+0012.0", 12.0),
])
def test_float_with_padding(text: str, value: float) -> None:
    assert conv(type="float")(text) == value


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity", "", "12.3.4", "1_000", "--1"])
def test_float_refuses_non_numbers_and_non_finite(text: str) -> None:
    with pytest.raises(ConversionError):
        conv(type="float")(text)


def test_int_bool_string() -> None:
    assert conv(type="int")("+  042") == 42
    with pytest.raises(ConversionError):
        conv(type="int")("4.2")
    assert conv(type="bool")(" ON ") is True
    assert conv(type="bool")("0") is False
    with pytest.raises(ConversionError):
        conv(type="bool")("maybe")
    assert conv(type="string")("  ABC 12 ") == "ABC 12"


def test_scale_offset() -> None:
    assert conv(type="float", scale=0.1, offset=-40)("+  500") == pytest.approx(10.0)
    assert conv(type="int", scale=2)("21") == 42.0
    with pytest.raises(ConversionError):
        conv(type="float", scale=1e308)("1e10")  # overflows to inf: refused


def test_map_with_and_without_type() -> None:
    assert conv(map={"ST": True, "US": False})("ST") is True
    assert conv(map={"0": "idle", "1": "run"})(" 1") == "run"
    assert conv(type="int", map={"A": 1, "B": 2})("B") == 2
    with pytest.raises(ConversionError, match="not in the map"):
        conv(map={"ST": True})("OL")


def test_several_rules_first_match_wins_and_optional_groups() -> None:
    rules = [
        ParseRule(regex=r"^\$WIXDR,C,(?P<temp>-?\d+\.\d+)(,P,(?P<baro>[\d.]+))?"),
        ParseRule(regex=r"^\$WIMWV,(?P<dir>[\d.]+),R,(?P<speed>[\d.]+)"),
    ]
    tags = [SerialTag.model_validate(t) for t in (
        {"name": "temp", "type": "float"}, {"name": "baro", "type": "float", "scale": 1000},
        {"name": "dir", "type": "float"}, {"name": "speed", "type": "float"},
    )]
    parser = Parser(rules, tags)
    first = parser.parse("$WIXDR,C,-3.5")
    assert first is not None and first.values == {"temp": -3.5} and not first.bad
    both = parser.parse("$WIXDR,C,21.0,P,1.0132")
    assert both is not None and both.values == {"temp": 21.0, "baro": pytest.approx(1013.2)}
    wind = parser.parse("$WIMWV,270.0,R,4.5,M,A")
    assert wind is not None and wind.values == {"dir": 270.0, "speed": 4.5}
    assert parser.parse("$GPGGA,whatever") is None


def test_conversion_error_marks_only_that_tag_bad() -> None:
    rules = [ParseRule(regex=r"^(?P<a>\S+) (?P<b>\S+)")]
    tags = [SerialTag.model_validate({"name": "a", "type": "float"}),
            SerialTag.model_validate({"name": "b", "type": "float"})]
    parsed = Parser(rules, tags).parse("1.5 OVER")
    assert parsed is not None
    assert parsed.values == {"a": 1.5, "b": None}
    assert "not a number" in parsed.bad["b"]
