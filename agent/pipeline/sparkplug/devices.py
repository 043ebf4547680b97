"""One device as the node has born it, and its payloads.

All per-tag decisions (alias, datatype) are made once, at birth; data
payloads are built from stored batches (the buffer's JSON samples) with
alias-only metrics, each with its reading's timestamp.

Report by exception is the default for Sparkplug: a tag with no ``report``
key (on itself or its device) is sent only when its value or its quality
changed since it was last sent (the birth counts as sent). A tag that says
``report: change`` was filtered by the processing stage already (deadband,
heartbeats: a heartbeat must get through), and ``report: always`` means
every reading: for both the encoder sends what the stage passed on.
History (the backlog replayed after a primary host returns) is always sent
as stored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.pipeline.encoders.json import split_events
from agent.pipeline.encoders.sparkplug.datatypes import (
    DOUBLE,
    NoFit,
    datatype_of_tag,
    datatype_of_value,
    fitter,
)
from agent.pipeline.encoders.sparkplug.encode import (
    QUALITY_BAD,
    QUALITY_GOOD,
    QUALITY_STALE,
    BirthMetric,
    Payload,
    add_metric,
    birth_payload,
    set_quality,
)
from agent.pipeline.sparkplug.context import TagReading
from agent.sdk.driver import DeviceConfig

__all__ = ["AliasTable", "DeviceModel"]

log = logging.getLogger("agent.sparkplug")

_UNSENT = object()


class AliasTable:
    """Aliases unique across the node, stable for the life of the process.

    1-4 are the node's own metrics (Node Control, buffer drops: see encode.node_metrics).
    """

    def __init__(self) -> None:
        self._next = 5
        self._by_key: dict[tuple[str, str], int] = {}

    def alias(self, device: str, tag: str) -> int:
        key = (device, tag)
        alias = self._by_key.get(key)
        if alias is None:
            alias = self._by_key[key] = self._next
            self._next += 1
        return alias


@dataclass(slots=True)
class TagModel:
    name: str
    alias: int
    datatype: int
    inferred: bool                  # no declared type: taken from a value
    unit: str | None
    last: Any = _UNSENT             # what was last sent (live), for report by exception
    quality: int = QUALITY_GOOD     # the quality last sent
    field: str = ""                 # the Metric value member, and the converter to it
    fit: Callable[[Any], Any] = str
    changes_only: bool = True       # no report key: the encoder's own report by exception

    def __post_init__(self) -> None:
        self.retype(self.datatype)

    def retype(self, datatype: int) -> None:
        self.datatype = datatype
        self.field, self.fit = fitter(datatype)


def _quality(error: str | None, uncertain: str | None) -> int:
    if error is not None:
        return QUALITY_BAD
    return QUALITY_STALE if uncertain is not None else QUALITY_GOOD


class DeviceModel:
    """The tags of one born device: alias, datatype, last sent value and quality."""

    def __init__(self, config: DeviceConfig, aliases: AliasTable,
                 latest: dict[str, TagReading]) -> None:
        self.config = config
        self.name = config.name
        self.tags: dict[str, TagModel] = {}
        self.by_alias: dict[int, TagModel] = {}
        self.needs_rebirth = False
        for tag in config.tags:
            declared = datatype_of_tag(tag)
            seen = latest.get(tag.name)
            datatype = declared or datatype_of_value(seen[0] if seen else None) or DOUBLE
            model = TagModel(tag.name, aliases.alias(config.name, tag.name), datatype,
                             declared is None, tag.unit)
            # The stage's default is "always"; Sparkplug's is "change" (see above).
            model.changes_only = (getattr(tag, "report", None) is None
                                  and getattr(config, "report", None) is None)
            self.tags[tag.name] = model
            self.by_alias[model.alias] = model

    def birth(self, latest: dict[str, TagReading], *, seq: int, now: int) -> Any:
        """The DBIRTH: every tag with its current value; what it says counts as sent."""
        metrics: list[BirthMetric] = []
        for tag in self.tags.values():
            value, ts, error, uncertain = latest.get(tag.name, (None, now, "no reading yet", None))
            quality = _quality(error, uncertain)
            if error is not None:
                value = None
            metrics.append(BirthMetric(tag.name, tag.alias, tag.datatype, value, ts, quality,
                                       tag.unit))
            tag.last, tag.quality = value, quality
        return birth_payload(metrics, seq=seq, ts=now)

    def _learn(self, tag: TagModel, value: Any) -> None:
        # A tag without a declared type was born with the type of its first
        # value (or double); a value of another type needs a new DBIRTH.
        if tag.inferred and value is not None:
            actual = datatype_of_value(value)
            if actual is not None and actual != tag.datatype:
                log.info("sparkplug: %s.%s is %d, not %d: the device is born again",
                         self.name, tag.name, actual, tag.datatype)
                tag.retype(actual)
                self.needs_rebirth = True

    def data(self, samples_json: bytes, *, now: int, historical: bool) -> tuple[Any, int]:
        """A DDATA payload (seq unset) for one stored batch, and the readings it carries.

        Live: only changed values or qualities. Historical: every reading,
        marked ``is_historical``; what was last sent live is left alone.
        """
        payload = Payload()
        payload.timestamp = now
        count = 0
        try:
            # A stored batch may end with its alarm events: not sent in Sparkplug.
            samples = json.loads(split_events(samples_json)[0])
        except ValueError as err:
            log.error("sparkplug: a stored batch of %s is not JSON (%s): skipped", self.name, err)
            return payload, 0
        # The hot path: one dict lookup, one comparison and one protobuf
        # add per changed reading; every per-tag decision was made at birth.
        tags = self.tags
        add = payload.metrics.add
        for s in samples:
            ts = int(s["ts"])
            bad: dict[str, str] | None = s.get("bad")
            unc: dict[str, str] | None = s.get("uncertain")
            for name, value in s["values"].items():
                tag = tags.get(name)
                if tag is None:
                    continue  # stored under an older tag list
                if bad and name in bad:
                    quality, value = QUALITY_BAD, None
                elif unc and name in unc:
                    quality = QUALITY_STALE
                else:
                    quality = QUALITY_GOOD
                if not historical:
                    if (tag.changes_only and quality == tag.quality and value == tag.last
                            and type(value) is type(tag.last)):
                        continue
                    if tag.inferred:
                        self._learn(tag, value)
                count += 1
                if value is not None:
                    try:
                        wire = tag.fit(value)
                    except NoFit:
                        value, quality = None, QUALITY_BAD
                if value is None:
                    m = add(alias=tag.alias, timestamp=ts, is_null=True)
                else:
                    m = add(alias=tag.alias, timestamp=ts)
                    setattr(m, tag.field, wire)
                if historical:
                    m.is_historical = True
                    if quality != QUALITY_GOOD:
                        set_quality(m, quality)
                    continue
                if quality != tag.quality:
                    set_quality(m, quality)
                tag.last, tag.quality = value, quality
        return payload, count

    def readback(self, tag: TagModel, value: Any, *, now: int) -> Any:
        """A DDATA with a DCMD write's read-back value."""
        payload = Payload()
        payload.timestamp = now
        quality = None if tag.quality == QUALITY_GOOD else QUALITY_GOOD
        fits = add_metric(payload, alias=tag.alias, datatype=tag.datatype, value=value, ts=now,
                          quality=quality)
        tag.last, tag.quality = (value, QUALITY_GOOD) if fits else (None, QUALITY_BAD)
        return payload


def split(payload: Any, limit: int) -> list[Any]:
    """Payloads of at most ``limit`` bytes (metrics kept in order)."""
    if payload.ByteSize() <= limit or len(payload.metrics) <= 1:
        return [payload]
    half = len(payload.metrics) // 2
    parts: list[Any] = []
    for chunk in (payload.metrics[:half], payload.metrics[half:]):
        part = Payload()
        part.timestamp = payload.timestamp
        part.metrics.extend(chunk)
        parts.extend(split(part, limit))
    return parts


def metric_names(payload: Any) -> Iterable[str]:
    return (m.name for m in payload.metrics)
