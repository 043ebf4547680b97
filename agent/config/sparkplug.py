"""``uplink.mqtt.sparkplug`` and the site checks of ``format: sparkplug_b``.

The DBIRTH size check is arithmetic over the protobuf wire format (an upper
bound of what ``agent.pipeline.sparkplug`` will build), so checking a site
file never loads protobuf.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from agent.sdk.driver import NAME_PATTERN, DeviceConfig, StrictModel

__all__ = ["SparkplugConfig", "dbirth_size_bound"]


class SparkplugConfig(StrictModel):
    group: str | None = Field(None, pattern=NAME_PATTERN, description="Group id (default: site)")
    edge_node: str | None = Field(None, pattern=NAME_PATTERN,
                                  description="Edge node id (default: gateway id)")
    primary_host: str | None = Field(
        None, pattern=NAME_PATTERN,
        description="Publish only while spBv1.0/STATE/{host} says online (default: none)",
    )
    data_qos: Literal[0, 1] = Field(
        1, description="QoS of DDATA/NDATA: 1 keeps a batch until the broker has it; "
                       "0 is what the specification asks (at most once)",
    )


def _varint(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _field(body: int) -> int:
    """A length-delimited field: tag, length, body."""
    return 1 + _varint(body) + body


# Longest text value assumed for a string tag that declares no length.
_STRING_GUESS = 64


def _value_bound(tag: object) -> int:
    length = getattr(tag, "length", None)
    kind = getattr(tag, "kind", None) or getattr(tag, "type", None)
    if kind == "string" or (kind is None and getattr(tag, "map", None)):
        text = 2 * length if isinstance(length, int) else _STRING_GUESS
        return _field(text)
    return 11  # a varint (10) or a double (8) with its tag


def dbirth_size_bound(device: DeviceConfig, alias_start: int = 3) -> int:
    """At most how many bytes this device's DBIRTH takes (values at their widest)."""
    total = 11 + 3  # payload timestamp, seq
    alias = alias_start + 10_000  # aliases grow across config changes; be generous
    for tag in device.tags:
        body = _field(len(tag.name.encode()))
        body += 1 + _varint(alias) + 7 + 2  # alias, timestamp (ms fit 6 bytes), datatype
        body += _value_bound(tag)
        props = _field(len("Quality")) + _field(2 + 6)  # quality when not good
        if tag.unit is not None:
            props += _field(len("engUnit")) + _field(2 + _field(len(tag.unit.encode())))
        body += _field(props)
        total += _field(body)
    return total


def check_births(devices: Sequence[DeviceConfig], max_message: int) -> list[tuple[int, str]]:
    """(device index, message) for every device whose DBIRTH cannot fit ``max_message``."""
    out: list[tuple[int, str]] = []
    for i, device in enumerate(devices):
        size = dbirth_size_bound(device)
        if size > max_message:
            out.append((i, f"the Sparkplug DBIRTH of device {device.name!r} can take {size} bytes, "
                           f"over uplink.mqtt.max_message ({max_message}): split the device "
                           f"or raise max_message"))
    return out
