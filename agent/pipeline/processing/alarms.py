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

A bad reading (or one that is not a number) neither raises nor clears an
alarm and restarts its delay; the first one of a run adds one ``unknown``
event.  State lives only in memory: after a restart every alarm starts
cleared and is evaluated again from the next reading.
"""

from __future__ import annotations

from typing import Any

from agent.sdk import DeviceConfig, Sample
from agent.sdk.analytics_options import AlarmConfig

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
        self.value: Any = None

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
        if not good or (kind is not float and kind is not int) or v != v:  # v != v: NaN
            self.pending_since = None
            if self.unknown:
                return None
            self.unknown = True
            return self.event(ts, "unknown", None, self.limit)
        self.unknown = False
        if self.active:
            self.value = v
            if self.back_in(v):
                self.active = False
                self.since = None
                return self.event(ts, "cleared", v, self.clear)
            return None
        if not self.past_limit(v):
            self.pending_since = None
            return None
        if self.pending_since is None:
            self.pending_since = ts
        if ts - self.pending_since < self.for_ms:
            return None
        self.active = True
        self.pending_since = None
        self.since = ts
        self.value = v
        return self.event(ts, "active", v, self.limit)


class AlarmStep:
    """Every alarm of one device."""

    def __init__(self, config: DeviceConfig) -> None:
        self._alarms = [_Alarm(cfg) for cfg in config.alarms]
        self._tags = frozenset(a.tag for a in self._alarms)

    def process(self, samples: list[Sample]) -> list[Sample]:
        for sample in samples:
            values = sample.values
            if self._tags.isdisjoint(values):
                continue
            bad = sample.bad
            events: list[dict[str, Any]] | None = None
            for alarm in self._alarms:
                v = values.get(alarm.tag, _MISSING)
                if v is _MISSING:
                    continue
                event = alarm.update(sample.ts, v, not (bad and alarm.tag in bad))
                if event is not None:
                    if events is None:
                        events = list(sample.events)
                    events.append(event)
            if events is not None:
                sample.events = tuple(events)
        return samples

    def active_alarms(self) -> list[dict[str, Any]]:
        """The active alarms, for ``status`` and the metrics."""
        return [{"alarm": a.name, "tag": a.tag, "since": a.since, "value": a.value,
                 "limit": a.limit, "severity": a.severity} for a in self._alarms if a.active]


def make_alarms(config: DeviceConfig) -> AlarmStep | None:
    return AlarmStep(config) if config.alarms else None
