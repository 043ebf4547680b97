"""Aggregate windows: tumbling wall-clock windows, sent as ``TAG.STAT`` tags.

A window of ``every`` seconds covers ``[k*every, (k+1)*every)`` in Unix
time, so a 1 m window ends at every full minute whatever the poll period or
start time.  A window closes when the first sample past its end arrives
(its stats go out in one sample stamped with the window's end, placed
before that sample), or, on a device that sent nothing since, when the
stage's clock tick finds it ended more than a poll period ago.

Stats are over the window's numeric readings that are not bad (booleans
count as 0 and 1; ``stddev`` is the population standard deviation); a
window without any sends ``count`` 0 and the other stats bad (``no
data``), and one that used an uncertain reading marks that tag's stats
uncertain (``uncertain readings``).  The first window after a (re)start
began before this step existed, so its stats are uncertain (``partial
window``); so is the first one after the clock jumped back.  A sample of
the window just sent (a late source timestamp) passes on without being
counted.

``raw: false`` is applied by a separate step (:func:`make_raw_filter`) that
runs after the alarms, so an alarm still sees every raw reading of a tag
whose readings are not sent.

Per sample a window takes its tags' values in one C call (``itemgetter``)
and keeps the row; rows are folded into running totals column by column
with C built-ins (``min``, ``max``, ``sum``) when the window closes or 256
rows have gathered, so a reading costs a few tens of nanoseconds and the
state stays bounded whatever the window's length.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import chain, repeat
from math import fsum
from operator import itemgetter, mul, sub, truediv
from typing import Any

from agent.sdk import DeviceConfig, Sample, now_ms
from agent.sdk.analytics_options import STATS, AggregateWindow

__all__ = ["RawFilter", "WindowStep", "make_raw_filter", "make_windows"]

# Rows kept before they are folded into the running totals: bounds memory
# for long windows (a day at 1 s polls) while folding in C-speed batches.
_FOLD_AT = 256
_NUMBER = (int, float, bool)


def _pstdev(column: tuple[Any, ...], mean: float) -> float:
    diffs = list(map(sub, column, repeat(mean, len(column))))
    return math.sqrt(fsum(map(mul, diffs, diffs)) / len(column))


class _Acc:
    """Running totals of one tag in the open window (over its good numeric readings)."""

    __slots__ = ("last", "m2", "max", "mean", "min", "n", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared differences from the mean
        self.min: Any = None
        self.max: Any = None
        self.last: Any = None

    def fold(self, column: tuple[Any, ...], squares: bool) -> None:
        try:
            total = sum(column)  # also the type check: None and text raise
        except TypeError:
            # None (bad or missing) or text: not something to average.
            column = tuple(v for v in column if type(v) in _NUMBER)
            if not column:
                return
            total = sum(column)
        k = len(column)
        lo, hi = min(column), max(column)
        if self.n == 0 or lo < self.min:
            self.min = lo
        if self.n == 0 or hi > self.max:
            self.max = hi
        self.last = column[-1]
        mean = total / k
        if squares:
            # Two passes over the chunk, then Chan et al.'s merge of (n, mean,
            # m2): exact enough for large values with a small spread.
            diffs = list(map(sub, column, repeat(mean, k)))
            m2 = fsum(map(mul, diffs, diffs))
            delta = mean - self.mean
            self.m2 += m2 + delta * delta * self.n * k / (self.n + k)
        self.n += k
        self.total += total
        self.mean = self.total / self.n

    def stats(self) -> tuple[Any, ...]:
        """In the order of :data:`STATS`."""
        return (self.min, self.max, self.mean, self.last, self.n, self.total,
                math.sqrt(self.m2 / self.n) if self.m2 > 0.0 else 0.0)


class _Window:
    """One ``aggregate`` entry: the readings of its tags in the open window."""

    __slots__ = ("accs", "doubtful", "every_ms", "flat_names", "folded", "get", "last_closed",
                 "names", "open_id", "partial_id", "pick", "rows", "squares", "stat_names",
                 "tags")

    def __init__(self, spec: AggregateWindow, started_ms: int) -> None:
        self.every_ms = round(spec.every * 1000)
        self.tags = tuple(spec.tags)
        self.accs = [_Acc() for _ in spec.tags]
        # Output names built once, per tag; ``pick`` takes the configured
        # stats out of _Acc.stats() in the same order.
        self.stat_names = tuple(spec.stats)
        self.names = [tuple(f"{tag}.{s}" for s in spec.stats) for tag in spec.tags]
        self.flat_names = [name for names in self.names for name in names]
        positions = [STATS.index(s) for s in spec.stats]
        if len(positions) == 1:
            first = positions[0]
            self.pick: Callable[[tuple[Any, ...]], tuple[Any, ...]] = lambda t: (t[first],)
        else:
            self.pick = itemgetter(*positions)
        self.squares = "stddev" in spec.stats
        # Per sample, one C call takes the window's tags out of it.
        if len(self.tags) == 1:
            one = itemgetter(self.tags[0])
            self.get: Callable[[dict[str, Any]], tuple[Any, ...]] = lambda v: (one(v),)
        else:
            self.get = itemgetter(*self.tags)
        self.rows: list[tuple[Any, ...]] = []
        #: Rows of the open window were folded into ``accs`` already.
        self.folded = False
        #: Tags with an uncertain reading in the open window.
        self.doubtful: set[str] = set()
        self.open_id: int | None = None
        self.last_closed: int | None = None
        # The window holding the start time began before we did.
        self.partial_id = started_ms // self.every_ms

    def add(self, sample: Sample) -> None:
        values = sample.values
        try:
            row = self.get(values)
        except KeyError:  # a push sample with some of the tags
            row = tuple(values.get(t) for t in self.tags)
        if sample.bad:
            row = tuple(None if t in sample.bad else v for t, v in zip(self.tags, row,
                                                                        strict=True))
        if sample.uncertain:
            self.doubtful.update(t for t in self.tags if t in sample.uncertain)
        self.rows.append(row)
        if len(self.rows) >= _FOLD_AT:
            self.fold()

    def fold(self) -> None:
        if self.rows:
            for acc, column in zip(self.accs, zip(*self.rows, strict=True), strict=True):
                acc.fold(column, self.squares)
            self.rows = []
            self.folded = True

    def close_clean(self, out: Sample) -> bool:
        """The usual close, all in C-level passes: every reading of the window
        still in ``rows`` and a number.  False (nothing done) otherwise."""
        if self.folded or not self.rows:
            return False
        columns = list(zip(*self.rows, strict=True))
        try:
            sums = list(map(sum, columns))  # None (bad) or text raise
        except TypeError:
            return False
        n = len(self.rows)
        by_stat: dict[str, Any] = {"count": repeat(n), "sum": sums, "last": self.rows[-1]}
        for stat in self.stat_names:
            if stat == "min":
                by_stat[stat] = map(min, columns)
            elif stat == "max":
                by_stat[stat] = map(max, columns)
            elif stat == "mean":
                by_stat[stat] = map(truediv, sums, repeat(n))
            elif stat == "stddev":
                by_stat[stat] = [_pstdev(column, total / n)
                                 for column, total in zip(columns, sums, strict=True)]
        # Tag-major, as flat_names: (t1.min, t1.max, ..., t2.min, ...).
        per_tag = zip(*(by_stat[stat] for stat in self.stat_names), strict=False)
        out.values.update(zip(self.flat_names, chain.from_iterable(per_tag), strict=False))
        self.rows = []
        return True

    def close(self) -> Sample:
        assert self.open_id is not None
        out = Sample(ts=(self.open_id + 1) * self.every_ms, values={})
        values, bad, uncertain = out.values, out.bad, out.uncertain
        partial = self.open_id <= self.partial_id
        if self.close_clean(out):
            if partial:
                uncertain.update(dict.fromkeys(self.flat_names, "partial window"))
            else:
                for tag, names in zip(self.tags, self.names, strict=True):
                    if tag in self.doubtful:
                        uncertain.update(dict.fromkeys(names, "uncertain readings"))
            self.doubtful.clear()
            self.last_closed, self.open_id = self.open_id, None
            return out
        self.fold()
        pick, stat_names = self.pick, self.stat_names
        for tag, acc, names in zip(self.tags, self.accs, self.names, strict=True):
            if acc.n:
                values.update(zip(names, pick(acc.stats()), strict=True))
            else:
                for stat, name in zip(stat_names, names, strict=True):
                    if stat == "count":
                        values[name] = 0
                    else:
                        values[name] = None
                        bad[name] = "no data"
            if partial:
                uncertain.update((name, "partial window") for name in names if name not in bad)
            elif tag in self.doubtful:
                uncertain.update((name, "uncertain readings") for name in names
                                 if name not in bad)
        self.accs = [_Acc() for _ in self.tags]
        self.folded = False
        self.doubtful.clear()
        self.last_closed, self.open_id = self.open_id, None
        return out


class WindowStep:
    """Every ``aggregate`` window of one device."""

    def __init__(self, config: DeviceConfig) -> None:
        started = now_ms()
        self._windows = [_Window(spec, started) for spec in config.aggregate]
        # A quiet device's window is closed by the clock this long after its
        # end (normally the next poll's sample closes it first).
        self._grace_ms = round(max(config.poll, 1.0) * 1000) + 1000

    def process(self, samples: list[Sample]) -> list[Sample]:
        out: list[Sample] = []
        for sample in samples:
            ts = sample.ts
            for window in self._windows:
                wid = ts // window.every_ms
                if window.open_id != wid:
                    if window.open_id is not None:
                        if window.open_id - 1 == wid:
                            continue  # a late sample of the window just sent: not in it
                        out.append(window.close())
                    elif wid == window.last_closed:
                        continue  # a late sample of a window the clock closed
                    if window.last_closed is not None and wid < window.last_closed:
                        # The clock jumped back (a first NTP sync on a gateway
                        # without a real-time clock): a fresh, partial window.
                        window.partial_id = wid
                    window.open_id = wid
                window.add(sample)
            out.append(sample)
        return out

    def tick(self, now: int) -> list[Sample]:
        """Close the windows that ended a while ago without a sample after them
        (a push device whose values stand still)."""
        return [window.close() for window in self._windows
                if window.open_id is not None
                and (window.open_id + 1) * window.every_ms + self._grace_ms <= now]


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
                clock=sample.clock,
                events=sample.events,
            )
            if kept.values or kept.events:
                out.append(kept)
        return out


def make_raw_filter(config: DeviceConfig) -> RawFilter | None:
    hidden = frozenset(tag for w in config.aggregate if not w.raw for tag in w.tags)
    return RawFilter(hidden) if hidden else None
