"""Frame text -> tag values: regex rules with named groups, then conversion.

Everything that can be decided once is decided when the device starts:
the regexes are compiled, and each rule carries the list of (tag, group,
converter) it feeds, so a frame costs one regex search and one call per tag.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.sdk.readings import NOT_FINITE
from drivers.serial.options import ParseRule, SerialTag

__all__ = ["ConversionError", "Parsed", "Parser", "make_converter"]


class ConversionError(ValueError):
    """A group's text that does not make a value of the tag's type."""


Converter = Callable[[str], Any]

_TRUE = frozenset({"1", "true", "on", "yes", "y", "t"})
_FALSE = frozenset({"0", "false", "off", "no", "n", "f"})


def _number_text(text: str) -> str:
    # Instruments pad after the sign ("+  12.345"): spaces inside a number
    # carry no meaning, so drop them all.  Underscores would be accepted by
    # float()/int() as digit separators; no instrument means that.
    if "_" in text:
        raise ConversionError(f"{text.strip()!r} is not a number")
    return text.replace(" ", "").replace("\t", "")


def _to_float(text: str) -> float:
    try:
        value = float(_number_text(text))
    except ValueError:
        raise ConversionError(f"{text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ConversionError(NOT_FINITE)
    return value


def _to_int(text: str) -> int:
    try:
        return int(_number_text(text), 10)
    except ValueError:
        raise ConversionError(f"{text.strip()!r} is not an integer") from None


def _to_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConversionError(f"{text.strip()!r} is not a boolean (1/0, true/false, on/off)")


def _to_string(text: str) -> str:
    return text.strip()


_BASE: dict[str, Converter] = {
    "float": _to_float,
    "int": _to_int,
    "bool": _to_bool,
    "string": _to_string,
}


def make_converter(tag: SerialTag) -> Converter:
    """The function turning a group's text into the tag's value."""
    if tag.map is not None:
        table = dict(tag.map)

        def mapped(text: str) -> Any:
            key = text.strip()
            try:
                return table[key]
            except KeyError:
                raise ConversionError(f"{key!r} is not in the map") from None

        return mapped
    assert tag.type is not None  # the model requires a type or a map
    base = _BASE[tag.type]
    if tag.scale is None and tag.offset is None:
        return base
    scale = 1.0 if tag.scale is None else tag.scale
    offset = 0.0 if tag.offset is None else tag.offset

    def scaled(text: str) -> float:
        value = base(text) * scale + offset
        if not math.isfinite(value):
            raise ConversionError(NOT_FINITE)
        return float(value)

    return scaled


@dataclass(frozen=True, slots=True)
class _Field:
    tag: str
    group: str
    convert: Converter


@dataclass(frozen=True, slots=True)
class _Rule:
    regex: re.Pattern[str]
    fields: tuple[_Field, ...]


@dataclass(slots=True)
class Parsed:
    """Values of the tags one frame carried; a failed conversion goes to ``bad``."""

    values: dict[str, Any]
    bad: dict[str, str]


class Parser:
    def __init__(self, rules: Sequence[ParseRule], tags: Sequence[SerialTag]) -> None:
        planned = []
        for rule in rules:
            regex = re.compile(rule.regex)
            fields = tuple(
                _Field(tag.name, tag.group_name, make_converter(tag))
                for tag in tags
                if tag.group_name in regex.groupindex
            )
            planned.append(_Rule(regex, fields))
        self._rules = tuple(planned)

    def parse(self, text: str) -> Parsed | None:
        """None when no rule matches; else the first matching rule's values.

        A group that took no part in the match (an optional part absent from
        this frame) gives no value: the tag is simply not in this frame.
        """
        for rule in self._rules:
            match = rule.regex.search(text)
            if match is None:
                continue
            values: dict[str, Any] = {}
            bad: dict[str, str] = {}
            for field in rule.fields:
                raw = match.group(field.group)
                if raw is None:
                    continue
                try:
                    values[field.tag] = field.convert(raw)
                except ConversionError as err:
                    values[field.tag] = None
                    bad[field.tag] = str(err)
            return Parsed(values, bad)
        return None
