"""Options of a serial ASCII device: the model ``edge-agent check`` validates.

Cheap to import (pydantic and ``re`` only): pyserial is loaded when a device
starts.  Byte strings (terminator, start marker, request) are written as YAML
strings; escapes such as ``"\\r\\n"`` or ``"\\x02"`` arrive as the real
characters, and each character up to U+00FF stands for one byte.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from agent.sdk.driver import DeviceConfig, StrictModel, TagConfig
from agent.sdk.types import Duration

__all__ = [
    "CHECKSUM_TYPES",
    "ChecksumConfig",
    "FrameConfig",
    "ParseRule",
    "SerialConnection",
    "SerialDevice",
    "SerialTag",
    "to_bytes",
]

# What each checksum covers and how wide it is lives in checksum.py.
CHECKSUM_TYPES = (
    "nmea", "xor", "sum", "lrc", "crc16", "crc16-modbus", "crc16-xmodem", "crc16-ccitt-false",
)
ChecksumType = Literal[
    "nmea", "xor", "sum", "lrc", "crc16", "crc16-modbus", "crc16-xmodem", "crc16-ccitt-false",
]

# Technicians write parity as a letter or a word; pyserial wants the letter.
_PARITY_WORDS = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S"}


def to_bytes(text: str) -> bytes:
    """One byte per character; the model has already refused characters above U+00FF."""
    return text.encode("latin-1")


def _check_byte_string(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if value == "":
        raise ValueError(f"{what} must not be empty")
    bad = [c for c in value if ord(c) > 0xFF]
    if bad:
        raise ValueError(
            f"{what} may hold only byte values (\\x00 to \\xff); {bad[0]!r} is not one"
        )
    return value


def _parity(value: Any) -> Any:
    if isinstance(value, str):
        return _PARITY_WORDS.get(value.strip().lower(), value.strip().upper())
    return value


def _stopbits(value: float) -> float:
    if value not in (1, 1.5, 2):
        raise ValueError("stopbits must be 1, 1.5 or 2")
    return value


def _map_keys(value: Any) -> Any:
    # `map: {0: off, 1: on}` gives integer keys in YAML; the frame text is a string.
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return value


class SerialConnection(StrictModel):
    port: str = Field(min_length=1, description="Device path, e.g. /dev/serial/by-id/usb-FTDI_x")
    baudrate: int = Field(9600, gt=0, le=4_000_000, description="Line speed in bit/s")
    bytesize: Literal[5, 6, 7, 8] = Field(8, description="Data bits")
    parity: Annotated[Literal["N", "E", "O", "M", "S"], BeforeValidator(_parity)] = Field(
        "N", description="N, E, O, M, S (or none, even, odd, mark, space)"
    )
    stopbits: Annotated[float, AfterValidator(_stopbits)] = Field(1, description="1, 1.5 or 2")
    xonxoff: bool = Field(False, description="Software flow control")
    rtscts: bool = Field(False, description="Hardware (RTS/CTS) flow control")


class FrameConfig(StrictModel):
    terminator: str | None = Field(
        None, description='Bytes ending a frame; "\\r\\n" unless a fixed length is given'
    )
    start: str | None = Field(None, description="Bytes starting a frame (STX); before it is noise")
    length: int | None = Field(None, ge=1, le=65536, description="Fixed frame length in bytes")
    max_length: int = Field(256, ge=1, le=65536, description="Longer frames are dropped")
    encoding: Literal["ascii", "latin-1", "utf-8"] = Field("ascii", description="Text encoding")

    @field_validator("terminator")
    @classmethod
    def _terminator(cls, value: str | None) -> str | None:
        return _check_byte_string(value, "terminator")

    @field_validator("start")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        return _check_byte_string(value, "start")

    @model_validator(mode="after")
    def _consistent(self) -> FrameConfig:
        if self.length is not None and self.length > self.max_length:
            raise ValueError(f"length {self.length} is above max_length {self.max_length}")
        return self

    @property
    def end(self) -> bytes | None:
        """The terminator in effect: CR LF when neither it nor a length is given."""
        if self.terminator is not None:
            return to_bytes(self.terminator)
        return None if self.length is not None else b"\r\n"


class ChecksumConfig(StrictModel):
    type: ChecksumType = Field(description="nmea, xor, sum, lrc, crc16, crc16-modbus, ...")
    format: Literal["hex", "binary"] = Field(
        "hex", description="Checksum as hex digits (2, or 4 for CRC-16) or raw bytes"
    )
    skip: int = Field(0, ge=0, le=64, description="Leading bytes of the frame not covered")
    separator: str = Field("", description="Bytes between the data and the checksum, e.g. '*'")

    @field_validator("separator")
    @classmethod
    def _separator(cls, value: str) -> str:
        return "" if value == "" else (_check_byte_string(value, "separator") or "")

    @model_validator(mode="after")
    def _nmea_is_fixed(self) -> ChecksumConfig:
        if self.type == "nmea" and (self.format != "hex" or self.skip or self.separator):
            raise ValueError("nmea checksums are always '*hh' over the text after '$'; "
                             "use type: xor to describe another layout")
        return self


def _checksum(value: Any) -> Any:
    # `checksum: nmea` is the short form of `checksum: {type: nmea}`.
    if isinstance(value, str):
        if value not in CHECKSUM_TYPES:
            choices = ", ".join(CHECKSUM_TYPES)
            raise ValueError(f"unknown checksum {value!r}; choose one of {choices}")
        return {"type": value}
    return value


class ParseRule(StrictModel):
    regex: str = Field(min_length=1, description="Python regex; named groups feed tags")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as err:
            raise ValueError(f"invalid regex: {err}") from None
        if not compiled.groupindex:
            raise ValueError("the regex has no named group such as (?P<weight>...)")
        return value


def _rules(value: Any) -> Any:
    # One rule is written as a mapping, several as a list of mappings.
    if isinstance(value, str):
        raise ValueError("write parse: {regex: '...'} (or a list of such rules)")
    return [value] if isinstance(value, dict) else value


ValueType = Literal["float", "int", "bool", "string"]
MapValue = bool | int | float | str
_MAP_TYPE_CHECK: dict[str, tuple[type, ...]] = {
    "bool": (bool,), "int": (int,), "float": (int, float), "string": (str,),
}


class SerialTag(TagConfig):
    group: str | None = Field(None, description="Named regex group; defaults to the tag name")
    type: ValueType | None = Field(None, description="float, int, bool, string")
    map: Annotated[dict[str, MapValue] | None, BeforeValidator(_map_keys)] = Field(
        None, description="Text of the group -> value (status codes)"
    )
    scale: float | None = Field(None, description="value * scale + offset (float and int)")
    offset: float | None = Field(None, description="value * scale + offset (float and int)")

    @field_validator("writable")
    @classmethod
    def _read_only(cls, value: bool) -> bool:
        if value:
            raise ValueError("serial tags are read-only")
        return value

    @model_validator(mode="after")
    def _type_rules(self) -> SerialTag:
        if self.type is None and self.map is None:
            raise ValueError("give a type (float, int, bool, string) or a map")
        if self.map is not None:
            if not self.map:
                raise ValueError("map is empty")
            if self.scale is not None or self.offset is not None:
                raise ValueError("scale/offset do not apply to mapped values")
            if self.type is not None:
                allowed = _MAP_TYPE_CHECK[self.type]
                for key, val in self.map.items():
                    if not isinstance(val, allowed) or (self.type != "bool" and
                                                        isinstance(val, bool)):
                        raise ValueError(f"map value for {key!r} is not a {self.type}")
        elif (self.scale is not None or self.offset is not None) and self.type not in (
            "float", "int"
        ):
            raise ValueError("scale/offset apply to float and int tags only")
        return self

    @property
    def group_name(self) -> str:
        return self.group or self.name


class SerialDevice(DeviceConfig):
    driver: Literal["serial"]
    connection: SerialConnection
    mode: Literal["stream", "poll"] = Field(
        "stream", description="stream: the instrument talks; poll: send request every poll"
    )
    sample: Literal["latest", "all"] = Field(
        "latest", description="stream: latest values per poll period, or every frame"
    )
    frame: FrameConfig = Field(default_factory=FrameConfig)
    parse: Annotated[list[ParseRule], BeforeValidator(_rules)] = Field(
        min_length=1, description="One rule or a list; the first that matches a frame is used"
    )
    checksum: Annotated[ChecksumConfig | None, BeforeValidator(_checksum)] = Field(
        None, description="Frames failing it are dropped and counted"
    )
    request: str | None = Field(None, description="poll: bytes sent each period")
    timeout: Duration = Field(1.0, gt=0, description="poll: how long to wait for the reply")
    reply_frames: int = Field(1, ge=1, le=100, description="poll: frames making up one reply")
    silence: Duration | None = Field(
        None, gt=0, description="stream: tags go bad when no frame arrived for this long"
    )
    tags: Sequence[SerialTag] = Field(min_length=1)

    @field_validator("request")
    @classmethod
    def _request(cls, value: str | None) -> str | None:
        return _check_byte_string(value, "request")

    @model_validator(mode="after")
    def _mode_rules(self) -> SerialDevice:
        if self.mode == "poll":
            if self.request is None:
                raise ValueError("mode poll needs a request (the bytes that ask for a reply)")
            if "sample" in self.model_fields_set:
                raise ValueError("sample applies to mode stream only")
            if "silence" in self.model_fields_set:
                raise ValueError("silence applies to mode stream only; poll uses timeout")
            if self.timeout >= self.poll:
                raise ValueError(f"timeout ({self.timeout:g}s) must be shorter than "
                                 f"poll ({self.poll:g}s)")
        elif "reply_frames" in self.model_fields_set:
            raise ValueError("reply_frames applies to mode poll only")
        groups = {g for rule in self.parse for g in re.compile(rule.regex).groupindex}
        for tag in self.tags:
            if tag.group_name not in groups:
                raise ValueError(f"tag {tag.name!r}: no regex has a group named "
                                 f"{tag.group_name!r} (groups: {', '.join(sorted(groups))})")
        return self
