"""Sparkplug B payloads built with the generated protobuf module.

Imported only for ``format: sparkplug_b`` (it loads protobuf). Everything
here is pure: a payload from values; the session decides what and when.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.pipeline.encoders.sparkplug import sparkplug_b_pb2 as pb
from agent.pipeline.encoders.sparkplug.datatypes import (
    BOOLEAN,
    INT32,
    INT64,
    STRING,
    UINT64,
    wire_value,
)

__all__ = [
    "QUALITY_BAD",
    "QUALITY_GOOD",
    "QUALITY_STALE",
    "BirthMetric",
    "Payload",
    "add_metric",
    "birth_payload",
    "death_payload",
    "decode",
    "drops_payload",
    "metric_value",
    "node_metrics",
    "set_quality",
]

Payload = pb.Payload

# The quality property's values in the specification (an Int32 named "Quality").
QUALITY_BAD, QUALITY_GOOD, QUALITY_STALE = 0, 192, 500


@dataclass(frozen=True, slots=True)
class BirthMetric:
    """One metric of a birth: its name, alias, datatype, value and properties."""

    name: str
    alias: int | None
    datatype: int
    value: Any
    ts: int
    quality: int = QUALITY_GOOD
    unit: str | None = None


def set_quality(metric: Any, quality: int) -> None:
    """Add the ``Quality`` property (Int32: 0 bad, 192 good, 500 stale)."""
    props = metric.properties
    props.keys.append("Quality")
    pv = props.values.add()
    pv.type = INT32
    pv.int_value = quality


def add_metric(payload: Any, *, alias: int | None, datatype: int, value: Any, ts: int,
               name: str | None = None, historical: bool = False,
               quality: int | None = None, with_datatype: bool = False) -> bool:
    """Append one metric; a value that does not fit its datatype goes as null (returns False)."""
    m = payload.metrics.add()
    if name is not None:
        m.name = name
    if alias is not None:
        m.alias = alias
    m.timestamp = ts
    if with_datatype:
        m.datatype = datatype
    if historical:
        m.is_historical = True
    fits = True
    if value is None:
        m.is_null = True
    else:
        wire = wire_value(datatype, value)
        if wire is None:
            m.is_null = True
            fits = False
            quality = QUALITY_BAD
        else:
            setattr(m, wire[0], wire[1])
    if quality is not None:
        set_quality(m, quality)
    return fits


def birth_payload(metrics: Iterable[BirthMetric], *, seq: int, ts: int) -> Any:
    """An NBIRTH or DBIRTH: every metric with name, alias, datatype, value and properties."""
    payload = pb.Payload()
    payload.timestamp = ts
    payload.seq = seq
    for bm in metrics:
        add_metric(payload, alias=bm.alias, name=bm.name, datatype=bm.datatype, value=bm.value,
                   ts=bm.ts, with_datatype=True,
                   quality=None if bm.quality == QUALITY_GOOD else bm.quality)
        if bm.unit is not None:
            m = payload.metrics[-1]
            m.properties.keys.append("engUnit")
            pv = m.properties.values.add()
            pv.type = STRING
            pv.string_value = bm.unit
    return payload


def death_payload(*, bd_seq: int | None, ts: int, seq: int | None = None) -> Any:
    """NDEATH (bdSeq, no seq) or DDEATH (seq, no metrics)."""
    payload = pb.Payload()
    payload.timestamp = ts
    if seq is not None:
        payload.seq = seq
    if bd_seq is not None:
        m = payload.metrics.add()
        m.name = "bdSeq"
        m.timestamp = ts
        m.datatype = INT64
        m.long_value = bd_seq
    return payload


#: Aliases of the node's drop counters (in NBIRTH, and NDATA when they change).
DROPPED_BATCHES, DROPPED_SAMPLES = 3, 4


def node_metrics(bd_seq: int, ts: int, dropped: tuple[int, int] = (0, 0)) -> list[BirthMetric]:
    """The NBIRTH's own metrics: bdSeq, the node controls we answer, the buffer's drops.

    Sparkplug's seq counts messages of one session; the buffer's own loss
    accounting (batches dropped by its size and age limits, before anything
    was sent) travels as these two counters.
    """
    return [
        BirthMetric("bdSeq", None, INT64, bd_seq, ts),
        BirthMetric("Node Control/Rebirth", 1, BOOLEAN, False, ts),
        BirthMetric("Node Control/Reboot", 2, BOOLEAN, False, ts),
        BirthMetric("Buffer/Batches Dropped", DROPPED_BATCHES, UINT64, dropped[0], ts),
        BirthMetric("Buffer/Samples Dropped", DROPPED_SAMPLES, UINT64, dropped[1], ts),
    ]


def drops_payload(dropped: tuple[int, int], ts: int) -> Any:
    """An NDATA with the buffer's drop counters (seq set when sent)."""
    payload = pb.Payload()
    payload.timestamp = ts
    for alias, value in zip((DROPPED_BATCHES, DROPPED_SAMPLES), dropped, strict=True):
        add_metric(payload, alias=alias, datatype=UINT64, value=value, ts=ts)
    return payload


def decode(data: bytes) -> Any:
    """A received NCMD/DCMD/NBIRTH payload; raises ValueError when it is not one."""
    payload = pb.Payload()
    try:
        payload.ParseFromString(data)
    except Exception as err:  # protobuf's DecodeError (message.DecodeError)
        raise ValueError(f"not a Sparkplug B payload: {err}") from None
    return payload


def metric_value(metric: Any, datatype: int | None = None) -> Any:
    """The Python value of a received metric (None when null or absent).

    ``datatype``: the one the metric was born with (a command may leave it out).
    """
    if metric.is_null:
        return None
    which = metric.WhichOneof("value")
    if which is None:
        return None
    value = getattr(metric, which)
    # Signed types arrive as two's complement in the unsigned fields.
    dt = datatype if datatype is not None else metric.datatype
    if which == "int_value" and dt in (1, 2, 3) and value >= 2**31:
        value -= 2**32
    elif which == "long_value" and dt == INT64 and value >= 2**63:
        value -= 2**64
    return value
