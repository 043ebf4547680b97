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

import heapq
import logging
import math
from typing import Any

from agent.sdk import DeviceConfig, Sample
from agent.sdk.processing_options import REPORT_DEFAULT, Report, TagPolicy, tag_policy

__all__ = ["ReportStep", "make_report_step"]

log = logging.getLogger("agent.pipeline.processing.report")

# Untracked tag names beyond the configured ones (derived tags); a safety cap.
_EXTRA_CAP = 10_000
# Samples this much older than the newest one seen mean the wall clock was
# stepped back (NTP, an operator): every tag is then sent once, as after a
# start, instead of waiting out heartbeats measured from the future.  Smaller
# steps back are source timestamps arriving out of order (OPC UA queues).
_CLOCK_BACK_MS = 60_000
_NEVER = math.inf
_MISSING: Any = object()


class _Plan:
    """One tag's settings, resolved at plan time."""

    __slots__ = ("always", "deadband", "heartbeat")

    def __init__(self, policy: TagPolicy) -> None:
        self.always = policy.report == "always"
        self.deadband = policy.deadband
        # ms; "never" without a heartbeat (ts + inf stays inf).
        self.heartbeat = _NEVER if policy.heartbeat is None else policy.heartbeat * 1000


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


_NUMBER = frozenset({int, float})


def _within(value: Any, last: Any, deadband: float) -> bool:
    """``value != last``: is it still no change worth sending (inside the deadband)?

    Only numbers have a deadband (a bool is not one here); NaN and infinities
    are outside any deadband, except NaN after NaN, which did not move.
    """
    if type(value) in _NUMBER and type(last) in _NUMBER:
        if -deadband < value - last < deadband:
            return True
        return bool(value != value and last != last)
    return False


class _Unequal:
    """The "last value" of a tag sent every time: equal to nothing."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


_SEND_ALWAYS = _Unequal()


class ReportStep:
    """``report`` for one device; build with :func:`make_report_step`.

    The hot loop touches one dict entry per tag that stands still (its last
    sent value) and calls nothing; the per-tag plan is looked up only for
    tags that moved.  Heartbeats come from a heap of due times, one entry
    per tag, so a poll looks only at the tags whose heartbeat is due.
    """

    __slots__ = ("_deadband", "_default", "_due", "_extra", "_heap", "_latest", "_name",
                 "_overdue", "_plans", "_quality", "_queued", "_value")

    def __init__(self, config: DeviceConfig, default_report: Report = REPORT_DEFAULT) -> None:
        self._name = config.name
        self._plans: dict[str, _Plan] = {
            tag.name: _Plan(tag_policy(config, tag, default_report)) for tag in config.tags}
        # Tags the config does not list follow the device's own keys.
        self._default = _Plan(TagPolicy(
            report=config.report or default_report,
            deadband=float(config.deadband) if isinstance(config.deadband, float) else 0.0,
            heartbeat=config.heartbeat, stale_after=None))
        self._extra = 0
        self._latest = -_NEVER
        #: tag -> last value sent (only tags that report by change)
        self._value: dict[str, Any] = {}
        #: tag -> its deadband (0.0: any change), for the tags in _value
        self._deadband: dict[str, float] = {}
        #: tag -> quality key of the last send, only while it is not good
        self._quality: dict[str, str] = {}
        #: tag -> ts from which an unchanged value is sent again (tags with a heartbeat)
        self._due: dict[str, float] = {}
        #: (due, tag), at most one entry per tag (those in _queued); an entry
        #: whose tag was sent since is pushed again with the new due time.
        self._heap: list[tuple[float, str]] = []
        self._queued: set[str] = set()
        #: tags whose heartbeat is due, waiting for a sample that has them
        self._overdue: set[str] = set()

    def _plan_of(self, name: str) -> _Plan:
        plan = self._plans.get(name)
        if plan is not None:
            return plan
        if self._extra >= _EXTRA_CAP:
            return _ALWAYS
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

    def _reset(self, ts: int) -> None:
        log.info("device %s: the clock went back %.0f s; sending every tag once",
                 self._name, (self._latest - ts) / 1000)
        for state in (self._value, self._deadband, self._quality, self._due):
            state.clear()
        self._heap.clear()
        self._queued.clear()
        self._overdue.clear()

    def _due_now(self, ts: int) -> set[str]:
        """Tags whose heartbeat is due at ``ts`` (popped from the heap)."""
        heap, due, overdue = self._heap, self._due, self._overdue
        while heap and heap[0][0] <= ts:
            when, name = heapq.heappop(heap)
            current = due.get(name)
            if current is not None and current > when:
                heapq.heappush(heap, (current, name))  # sent since: due later
            else:
                self._queued.discard(name)
                if current is not None:
                    overdue.add(name)
        return overdue

    def _one(self, sample: Sample) -> Sample | None:
        ts = sample.ts
        if ts < self._latest - _CLOCK_BACK_MS:
            self._reset(ts)
        if ts > self._latest:
            self._latest = ts
        values = sample.values
        last = self._value
        deadbands = self._deadband
        send: list[str] = []
        if not sample.bad and not sample.uncertain and not self._quality:
            # Everything good now and at the last sends: values decide alone.
            # (The hot loop: subscripts, no calls, for the tags that stand still.)
            for name, value in values.items():
                try:
                    prev = last[name]
                except KeyError:  # first sight of the tag (state built at a start)
                    self._sent(name, value, None, ts)
                    send.append(name)
                    continue
                if value == prev:
                    continue
                if type(value) in _NUMBER and type(prev) in _NUMBER:
                    deadband = deadbands[name]
                    if -deadband < value - prev < deadband or (value != value and prev != prev):
                        continue
                self._sent(name, value, None, ts)
                send.append(name)
        else:
            qualities = self._quality
            for name, value in values.items():
                quality = _quality(name, sample)
                prev = last.get(name, _MISSING)
                if (prev is not _MISSING and quality == qualities.get(name)
                        and (value == prev or _within(value, prev, deadbands[name]))):
                    continue
                self._sent(name, value, quality, ts)
                send.append(name)
        if (self._heap and self._heap[0][0] <= ts) or self._overdue:
            beats = self._due_now(ts)
            sending = set(send)
            for name in [n for n in beats if n in values]:
                beats.discard(name)
                if name not in sending:
                    self._sent(name, values[name], _quality(name, sample), ts)
                    sending.add(name)
            if len(sending) != len(send):  # keep the sample's tag order
                send = [n for n in values if n in sending]
        if len(send) == len(values):
            return sample
        if not send and not sample.events:
            return None
        bad = sample.bad
        uncertain = sample.uncertain
        return Sample(
            ts,
            {n: values[n] for n in send},
            {n: bad[n] for n in send if n in bad} if bad else {},
            {n: uncertain[n] for n in send if n in uncertain} if uncertain else {},
            sample.clock,
            # Alarm events always go out, also with no tag to send.
            events=sample.events,
        )

    def _sent(self, name: str, value: Any, quality: str | None, ts: int) -> None:
        plan = self._plan_of(name)
        if plan.always:
            self._value[name] = _SEND_ALWAYS
            self._deadband[name] = 0.0
            return
        self._value[name] = value
        self._deadband[name] = plan.deadband
        if quality is None:
            self._quality.pop(name, None)
        else:
            self._quality[name] = quality
        if plan.heartbeat != _NEVER:
            due = ts + plan.heartbeat
            self._due[name] = due
            self._overdue.discard(name)
            if name not in self._queued:
                heapq.heappush(self._heap, (due, name))
                self._queued.add(name)


_ALWAYS = _Plan(TagPolicy(report="always", deadband=0.0, heartbeat=None, stale_after=None))


def make_report_step(config: DeviceConfig) -> ReportStep | None:
    """The step, or None when the device and all its tags report always (no cost)."""
    if (config.report or REPORT_DEFAULT) == "always" and all(
            (t.report or config.report or REPORT_DEFAULT) == "always" for t in config.tags):
        return None
    return ReportStep(config)
