"""Report by exception: the last step, deciding which tags of a sample are sent.

A tag with ``report: change`` is sent when

- it has not been sent since this state was built (a start, a config change),
- its quality changed: good, bad with an error text, uncertain with a reason
  (a new error text or reason counts as a change),
- its value changed: numbers by at least the ``deadband`` (absolute, or the
  percentage of ``range`` resolved at plan time), anything else (strings,
  booleans, lists) on any change.  The comparison is against the last value
  *sent*, so a slow drift adds up and goes out once it passes the deadband,
- or its last send is ``heartbeat`` old (by the samples' timestamps): the
  reading that confirmed the value goes out with its own timestamp; a bad
  reading goes out as bad, never as the last good value.

Tags with ``report: always`` pass untouched; a sample whose tags all go out
is passed on as the same object (``report: always`` stays byte-for-byte what
it was).  A sample with nothing to send is dropped: no empty sample, no
empty message.

A device restart (reconnect) keeps the state: the outage itself emitted
every tag as bad, so the first good reading after it is a quality change and
the consumer gets the full picture anyway.

State: one entry per tag (its last sent value, quality and time).  Tags the
config does not list (computed or aggregate tags of steps that run before
this one) follow the device's own keys; at most ``_EXTRA_CAP`` of them are
tracked, beyond that they are always sent (bounded memory, nothing lost).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from agent.sdk import DeviceConfig, Sample
from agent.sdk.processing_options import REPORT_DEFAULT, Report, TagPolicy, tag_policy

__all__ = ["ReportStep", "make_report_step"]

log = logging.getLogger("agent.pipeline.processing.report")

# Untracked tag names beyond the configured ones (derived tags); a safety cap.
_EXTRA_CAP = 10_000

# Per tag: None = report always; else (deadband, heartbeat in ms or 0 for none).
_Plan = tuple[float, int] | None


def _plan(policy: TagPolicy) -> _Plan:
    if policy.report == "always":
        return None
    heartbeat = 0 if policy.heartbeat is None else max(1, round(policy.heartbeat * 1000))
    return (policy.deadband, heartbeat)


def _quality(name: str, sample: Sample) -> str | None:
    """None for good; else a key that changes with the error text or reason."""
    if sample.bad:
        error = sample.bad.get(name)
        if error is not None:
            return "b" + error
    if sample.uncertain:
        reason = sample.uncertain.get(name)
        if reason is not None:
            return "u" + reason
    return None


def _moved(value: Any, last: Any, deadband: float) -> bool:
    """``value != last`` already holds; is it a change worth sending?"""
    kind, last_kind = type(value), type(last)
    if (kind is float or kind is int) and (last_kind is float or last_kind is int):
        if value != value and last != last:  # both NaN: nothing moved
            return False
        if deadband > 0.0 and math.isfinite(value) and math.isfinite(last):
            return bool(abs(value - last) >= deadband)
    return True


class ReportStep:
    """``report`` for one device; build with :func:`make_report_step`."""

    __slots__ = ("_default", "_extra", "_last", "_plans")

    def __init__(self, config: DeviceConfig, default_report: Report = REPORT_DEFAULT) -> None:
        # Everything per tag is decided here, once: the loop only looks it up.
        self._plans: dict[str, _Plan] = {
            tag.name: _plan(tag_policy(config, tag, default_report)) for tag in config.tags}
        device_default = config.report or default_report
        self._default: _Plan = (
            None if device_default == "always" else
            (float(config.deadband) if isinstance(config.deadband, float) else 0.0,
             0 if config.heartbeat is None else max(1, round(config.heartbeat * 1000))))
        self._extra = 0
        # name -> (value, quality, ts) of the last send
        self._last: dict[str, tuple[Any, str | None, int]] = {}

    def _plan_of(self, name: str) -> _Plan:
        if self._extra >= _EXTRA_CAP:
            return None
        self._extra += 1
        self._plans[name] = self._default
        return self._default

    def process(self, samples: list[Sample]) -> list[Sample]:
        out: list[Sample] = []
        for sample in samples:
            kept = self._one(sample)
            if kept is not None:
                out.append(kept)
        return out

    def _one(self, sample: Sample) -> Sample | None:
        ts = sample.ts
        plans = self._plans
        last = self._last
        clean = not sample.bad and not sample.uncertain
        send: list[str] = []
        for name, value in sample.values.items():
            try:
                plan = plans[name]
            except KeyError:
                plan = self._plan_of(name)
            if plan is None:
                send.append(name)
                continue
            quality = None if clean else _quality(name, sample)
            prev = last.get(name)
            if prev is not None:
                prev_value, prev_quality, prev_ts = prev
                deadband, heartbeat = plan
                unchanged = quality == prev_quality and (
                    value == prev_value or not _moved(value, prev_value, deadband))
                # Unchanged: only a heartbeat (or a clock that went back) sends it.
                if unchanged and (not heartbeat or prev_ts <= ts < prev_ts + heartbeat):
                    continue
            last[name] = (value, quality, ts)
            send.append(name)
        if len(send) == len(sample.values):
            return sample
        if not send:
            return None
        values = sample.values
        bad = sample.bad
        uncertain = sample.uncertain
        return Sample(
            ts,
            {n: values[n] for n in send},
            {n: bad[n] for n in send if n in bad} if bad else {},
            {n: uncertain[n] for n in send if n in uncertain} if uncertain else {},
            sample.clock,
        )


def make_report_step(config: DeviceConfig) -> ReportStep | None:
    """The step, or None when the device and all its tags report always (no cost)."""
    if (config.report or REPORT_DEFAULT) == "always" and all(
            (t.report or config.report or REPORT_DEFAULT) == "always" for t in config.tags):
        return None
    return ReportStep(config)
