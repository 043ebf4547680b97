"""Aggregate windows: tumbling wall-clock windows, sent as ``TAG.STAT`` tags.

A window of ``every`` seconds covers ``[k*every, (k+1)*every)`` in Unix
time, so a 1 m window ends at every full minute whatever the poll period or
start time.  A window closes when the first sample past its end arrives;
its stats go out in one sample stamped with the window's end, placed
before that sample.  Stats are over the window's good numeric readings
(``stddev`` is the population standard deviation); a window without any
sends ``count`` 0 and the other stats bad (``no data``).  The first window
after a (re)start began before this step existed, so its stats are
uncertain (``partial window``).

``raw: false`` is applied by a separate step (:func:`make_raw_filter`) that
runs after the alarms, so an alarm still sees every raw reading of a tag
whose readings are not sent.

Per reading the cost is one accumulator update; the accumulators are
plain lists (the inner loop is the hot path of a site with many tags).
"""

from __future__ import annotations

import math
from typing import Any

from agent.sdk import DeviceConfig, Sample, now_ms
from agent.sdk.analytics_options import AggregateWindow

__all__ = ["RawFilter", "WindowStep", "make_raw_filter", "make_windows"]

_MISSING = object()
# Accumulator slots: count, sum and sum of squares of (x - shift), min, max, last, shift.
_N, _SUM, _SQ, _MIN, _MAX, _LAST, _SHIFT = range(7)


def _fresh() -> list[Any]:
    return [0, 0.0, 0.0, None, None, None, 0.0]


class _Window:
    """One ``aggregate`` entry: its tags' accumulators for the open window."""

    __slots__ = ("accs", "every_ms", "names", "open_id", "partial_id", "stats")

    def __init__(self, spec: AggregateWindow, started_ms: int) -> None:
        self.every_ms = round(spec.every * 1000)
        self.stats = tuple(spec.stats)
        self.accs: list[tuple[str, list[Any]]] = [(tag, _fresh()) for tag in spec.tags]
        # Output names built once: (tag, ((stat, "tag.stat"), ...)).
        self.names = [(tag, tuple((s, f"{tag}.{s}") for s in spec.stats)) for tag in spec.tags]
        self.open_id: int | None = None
        # The window holding the start time began before we did.
        self.partial_id = started_ms // self.every_ms

    def close(self) -> Sample:
        assert self.open_id is not None
        out = Sample(ts=(self.open_id + 1) * self.every_ms, values={})
        values, bad, uncertain = out.values, out.bad, out.uncertain
        partial = self.open_id <= self.partial_id
        for (_, acc), (_, names) in zip(self.accs, self.names, strict=True):
            n = acc[_N]
            for stat, name in names:
                if stat == "count":
                    values[name] = n
                elif n == 0:
                    values[name] = None
                    bad[name] = "no data"
                    continue
                elif stat == "min":
                    values[name] = acc[_MIN]
                elif stat == "max":
                    values[name] = acc[_MAX]
                elif stat == "last":
                    values[name] = acc[_LAST]
                elif stat == "sum":
                    values[name] = acc[_SUM] + n * acc[_SHIFT]
                elif stat == "mean":
                    values[name] = acc[_SHIFT] + acc[_SUM] / n
                else:  # stddev
                    mean_d = acc[_SUM] / n
                    values[name] = math.sqrt(max(acc[_SQ] / n - mean_d * mean_d, 0.0))
                if partial:
                    uncertain[name] = "partial window"
            acc[:] = _fresh()
        return out


class WindowStep:
    """Every ``aggregate`` window of one device."""

    def __init__(self, config: DeviceConfig) -> None:
        started = now_ms()
        self._windows = [_Window(spec, started) for spec in config.aggregate]

    def process(self, samples: list[Sample]) -> list[Sample]:
        out: list[Sample] = []
        for sample in samples:
            ts = sample.ts
            values = sample.values
            bad = sample.bad
            for window in self._windows:
                wid = ts // window.every_ms
                if window.open_id != wid:
                    if window.open_id is not None and wid > window.open_id:
                        out.append(window.close())
                    elif window.open_id is not None:
                        continue  # a late sample of a closed window: already sent without it
                    window.open_id = wid
                for tag, acc in window.accs:
                    v = values.get(tag, _MISSING)
                    if v is _MISSING or (bad and tag in bad):
                        continue
                    kind = type(v)
                    if kind is not float and kind is not int:
                        continue  # None, bool, text: not something to average
                    if acc[_N]:
                        acc[_N] += 1
                        d = v - acc[_SHIFT]
                        acc[_SUM] += d
                        acc[_SQ] += d * d
                        if v < acc[_MIN]:
                            acc[_MIN] = v
                        if v > acc[_MAX]:
                            acc[_MAX] = v
                    else:
                        # Shifting by the first value keeps the sum of squares exact
                        # enough for stddev of large values with small spread.
                        acc[_N], acc[_SUM], acc[_SQ] = 1, 0.0, 0.0
                        acc[_MIN] = acc[_MAX] = acc[_SHIFT] = v
                    acc[_LAST] = v
            out.append(sample)
        return out


def make_windows(config: DeviceConfig) -> WindowStep | None:
    return WindowStep(config) if config.aggregate else None


class RawFilter:
    """Drops the raw readings of tags aggregated with ``raw: false``."""

    def __init__(self, tags: frozenset[str]) -> None:
        self._tags = tags

    def process(self, samples: list[Sample]) -> list[Sample]:
        out: list[Sample] = []
        hidden = self._tags
        for sample in samples:
            values = sample.values
            if hidden.isdisjoint(values):
                out.append(sample)
                continue
            # A new sample: the status view keeps the raw one.
            kept = Sample(
                ts=sample.ts,
                values={t: v for t, v in values.items() if t not in hidden},
                bad={t: e for t, e in sample.bad.items() if t not in hidden},
                uncertain={t: r for t, r in sample.uncertain.items() if t not in hidden},
                events=sample.events,
            )
            if kept.values or kept.events:
                out.append(kept)
        return out


def make_raw_filter(config: DeviceConfig) -> RawFilter | None:
    hidden = frozenset(tag for w in config.aggregate if not w.raw for tag in w.tags)
    return RawFilter(hidden) if hidden else None
