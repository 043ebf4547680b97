"""Limit alarms with hysteresis and a delay; their events ride on samples.

An ``above`` alarm becomes active when its tag has been above the limit
for ``for`` (measured in sample time, so a backlog or a slow poll gives the
same answer as live data) and clears only when the value falls below
``clear_below`` (without it: when it is no longer above).  ``below`` is the
mirror image.  Each change adds an event
``{ts, alarm, tag, state, value, limit, severity}`` to the sample where it
happened (``limit`` is the limit crossed: the clear limit for ``cleared``);
the buffer sends it in the device's data message under ``events`` with the
sample's durability, so an alarm raised while the uplink is down arrives
later with its true time.

A bad reading (or one that is not a number: text, NaN) neither raises nor
clears an alarm and restarts its delay; the first one of a run adds one ``unknown``
event.  State lives only in memory: after a restart every alarm starts
cleared and is evaluated again from the next reading.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import compress
from operator import ge, itemgetter, le
from typing import Any

from agent.sdk import DeviceConfig, Sample
from agent.sdk.analytics_options import AlarmConfig, aggregate_names

__all__ = ["AlarmStep", "make_alarms"]

_MISSING = object()


class _Alarm:
    """One alarm's config (flattened for the hot path) and state."""

    __slots__ = ("above", "active", "clear", "cleared_by_limit", "for_ms", "limit", "name",
                 "pending_since", "severity", "since", "tag", "unknown", "value")

    def __init__(self, cfg: AlarmConfig) -> None:
        self.name = cfg.name
        self.tag = cfg.tag
        self.above = cfg.above is not None
        self.limit = cfg.limit
        self.clear = cfg.clear
        # Without a clear limit the alarm clears as soon as it is no longer past the limit.
        self.cleared_by_limit = (cfg.clear_below if self.above else cfg.clear_above) is None
        self.for_ms = round(cfg.for_ * 1000)
        self.severity = cfg.severity
        self.active = False
        self.unknown = False
        self.pending_since: int | None = None
        self.since: int | None = None
        self.value: Any = None  # the reading that raised it

    def past_limit(self, v: float) -> bool:
        return v > self.limit if self.above else v < self.limit

    def back_in(self, v: float) -> bool:
        if self.cleared_by_limit:
            return not self.past_limit(v)
        return v < self.clear if self.above else v > self.clear

    def event(self, ts: int, state: str, value: Any, limit: float) -> dict[str, Any]:
        return {"ts": ts, "alarm": self.name, "tag": self.tag, "state": state,
                "value": value, "limit": limit, "severity": self.severity}

    def update(self, ts: int, v: Any, good: bool) -> dict[str, Any] | None:
        """Feed one reading; return the event it causes, if any."""
        kind = type(v)
        if not good or (kind is not float and kind is not int and kind is not bool) or v != v:
            self.pending_since = None
            if self.unknown:
                return None
            self.unknown = True
            return self.event(ts, "unknown", None, self.limit)
        self.unknown = False
        if self.active:
            if self.back_in(v):
                self.active = False
                self.since = None
                return self.event(ts, "cleared", v, self.clear)
            return None
        if not self.past_limit(v):
            self.pending_since = None
            return None
        if self.pending_since is None or ts < self.pending_since:  # (the clock went back)
            self.pending_since = ts
        if ts - self.pending_since < self.for_ms:
            return None
        self.active = True
        self.pending_since = None
        self.since = ts
        self.value = v
        return self.event(ts, "active", v, self.limit)


class AlarmStep:
    """Every alarm of one device.

    Most readings change nothing: per sample the step takes every watched
    value in one C call and tests whether any reached its alarm's current
    trigger (the limit while cleared, the clear limit while active) with
    C-level ``map``/``any`` (``compress`` finds which); only those, and the few alarms
    waiting out their ``for`` or coming back from a bad reading, run their
    Python update.  The trigger test errs on the side of a visit, the update
    is exact.
    """

    def __init__(self, config: DeviceConfig) -> None:
        derived = set(aggregate_names(config.aggregate))
        self._alarms = [_Alarm(cfg) for cfg in config.alarms]
        # Alarms on TAG.STAT see only window-end samples: checked one by one.
        self._fast = [a for a in self._alarms if a.tag not in derived]
        self._slow = [a for a in self._alarms if a.tag in derived]
        self._slow_tags = frozenset(a.tag for a in self._slow)
        self._fast_tags = frozenset(a.tag for a in self._fast)
        tags = [a.tag for a in self._fast]
        self._get: Callable[[dict[str, Any]], tuple[Any, ...]] = lambda v: ()
        if len(tags) == 1:
            one = itemgetter(tags[0])
            self._get = lambda v: (one(v),)
        elif tags:
            self._get = itemgetter(*tags)
        self._index = range(len(tags))
        # A value v of alarm i needs a visit when v >= rise[i] or v <= fall[i]
        # (the direction it does not wait for holds an infinity).
        self._rise = [math.inf] * len(tags)
        self._fall = [-math.inf] * len(tags)
        self._watch: set[int] = set()
        for i in self._index:
            self._arm(i)

    def _arm(self, i: int) -> None:
        a = self._fast[i]
        trigger = a.clear if a.active else a.limit
        if a.above != a.active:  # above and cleared, or below and active: waits for a rise
            self._rise[i], self._fall[i] = trigger, -math.inf
        else:
            self._rise[i], self._fall[i] = math.inf, trigger
        if a.pending_since is not None or a.unknown:
            self._watch.add(i)
        else:
            self._watch.discard(i)

    def process(self, samples: list[Sample]) -> list[Sample]:
        for sample in samples:
            values = sample.values
            events: list[dict[str, Any]] = []
            if self._fast:
                self._check_fast(sample, events)
            if self._slow_tags and not self._slow_tags.isdisjoint(values):
                for alarm in self._slow:
                    self._feed(alarm, sample, events)
            if events:
                sample.events = (*sample.events, *events)
        return samples

    def _check_fast(self, sample: Sample, events: list[dict[str, Any]]) -> None:
        values = sample.values
        visit: Iterable[int]
        if sample.bad and not self._fast_tags.isdisjoint(sample.bad):
            visit = self._index
        else:
            try:
                row = self._get(values)
                # Usually no value reached a trigger: two short-circuiting passes.
                if any(map(ge, row, self._rise)) or any(map(le, row, self._fall)):
                    hits = {*compress(self._index, map(ge, row, self._rise)),
                            *compress(self._index, map(le, row, self._fall))}
                    visit = sorted(self._watch.union(hits))
                elif self._watch:
                    visit = sorted(self._watch)
                else:
                    return
            except (KeyError, TypeError):  # a tag missing (push or window sample), not a number
                visit = [i for i in self._index if self._fast[i].tag in values]
        for i in visit:
            if self._feed(self._fast[i], sample, events):
                self._arm(i)

    @staticmethod
    def _feed(alarm: _Alarm, sample: Sample, events: list[dict[str, Any]]) -> bool:
        """Update one alarm from a sample; True when its state may have changed."""
        v = sample.values.get(alarm.tag, _MISSING)
        if v is _MISSING:
            return False
        good = not (sample.bad and alarm.tag in sample.bad)
        event = alarm.update(sample.ts, v, good)
        if event is not None:
            events.append(event)
        return True

    def active_alarms(self) -> list[dict[str, Any]]:
        """The active alarms, for ``status`` and the metrics."""
        return [{"alarm": a.name, "tag": a.tag, "since": a.since, "value": a.value,
                 "limit": a.limit, "severity": a.severity} for a in self._alarms if a.active]


def make_alarms(config: DeviceConfig) -> AlarmStep | None:
    return AlarmStep(config) if config.alarms else None
