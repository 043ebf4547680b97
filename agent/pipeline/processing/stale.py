"""``stale_after``: a good value that has not changed for this long is doubtful.

A frozen PLC program or a sensor stuck at one value still answers every
poll, with the same value.  Once a tag's value has been exactly the same
(no deadband: any movement at all proves it alive) for ``stale_after`` by
the samples' timestamps, its readings get ``uncertain: stale``; the first
reading that differs goes out without it.  The quality change makes
``report: change`` send both moments.

A bad reading ends the run (the value is unknown); a reason the driver gave
already (``uncertain``) is kept, not overwritten.  Runs before the report
step.  State: one entry per tag with ``stale_after`` (last value, since when).

Push devices (an OPC UA subscription) send nothing while a value stands
still, so there the check happens only when a sample of the device arrives.
"""

from __future__ import annotations

from typing import Any

from agent.sdk import DeviceConfig, Sample

__all__ = ["STALE", "StaleStep", "make_stale_step"]

STALE = "stale"


class StaleStep:
    __slots__ = ("_limits", "_since")

    def __init__(self, limits: dict[str, int]) -> None:
        #: tag -> stale_after in ms
        self._limits = limits
        #: tag -> (value, ts of the first reading with it, ts from which it is stale);
        #: a tag with stale_after and no value yet has the entry _UNSEEN.
        self._since: dict[str, tuple[Any, int, int]] = dict.fromkeys(limits, _UNSEEN)

    def process(self, samples: list[Sample]) -> list[Sample]:
        return [self._one(s) for s in samples]

    def _one(self, sample: Sample) -> Sample:
        ts = sample.ts
        since = self._since
        entry_of = since.get
        bad = sample.bad
        uncertain = sample.uncertain
        stale: list[str] | None = None
        for name, value in sample.values.items():
            entry = entry_of(name)
            if entry is None:
                continue  # no stale_after on this tag
            if bad and name in bad:
                since[name] = _UNSEEN  # the value is unknown: a new run starts after it
                continue
            prev, start, deadline = entry
            if prev != value or ts < start:  # (_NOTHING equals no value)
                since[name] = (value, ts, ts + self._limits[name])
            elif ts >= deadline and not (uncertain and name in uncertain):
                if stale is None:
                    stale = []
                stale.append(name)
        if stale is None:
            return sample
        # A new sample: the raw one is also what the status page shows.
        return Sample(sample.ts, sample.values, sample.bad,
                      {**sample.uncertain, **dict.fromkeys(stale, STALE)}, sample.clock,
                      events=sample.events)


_NOTHING: Any = object()
_UNSEEN: tuple[Any, int, int] = (_NOTHING, 0, 0)


def make_stale_step(config: DeviceConfig) -> StaleStep | None:
    limits: dict[str, int] = {}
    for tag in config.tags:
        after = tag.stale_after if tag.stale_after is not None else config.stale_after
        if after is not None:
            limits[tag.name] = max(1, round(after * 1000))
    return StaleStep(limits) if limits else None
