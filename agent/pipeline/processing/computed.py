"""Computed tags: derived values from safe expressions over a device's tags.

The expressions were checked when the config was validated; here they are
compiled once per device (``agent.sdk.expressions``), in dependency order,
so a computed tag may use one defined after it.  Per sample each computed
tag costs its expression plus a dictionary lookup per input.

Quality follows the inputs: a bad input makes the tag bad (the error names
the input), an uncertain one makes it uncertain; a failure of the
arithmetic itself (division by zero, overflow, a result that is not a
finite number) makes it bad with that reason.  Nothing here raises.

Computed tags are added to the sample in place, as ordinary tags, so the
steps after this one (windows, alarms, report by exception) and the status
view treat them like any other tag.
"""

from __future__ import annotations

from typing import Any

from agent.sdk import DeviceConfig, Sample
from agent.sdk.expressions import Compiled, EvalError, compile_expr, evaluate

__all__ = ["ComputedStep", "make_computed"]

_MISSING = object()
# Only numbers enter an expression: a string or a list could make ``*``
# build something huge, and means the expression was written for other data.
_NUMBERS = (int, float, bool)


class ComputedStep:
    """The computed tags of one device."""

    def __init__(self, config: DeviceConfig) -> None:
        self._plans: list[tuple[str, Compiled]] = [
            (c.name, compile_expr(c.expr)) for c in config.computed_order()
        ]
        computed = {name for name, _ in self._plans}
        #: Device tags the expressions read: their last reading, for push
        #: devices whose samples carry only the tags that changed.
        self._watched = frozenset(n for _, c in self._plans for n in c.inputs if n not in computed)
        self._last: dict[str, tuple[Any, str | None, str | None]] = {}

    def process(self, samples: list[Sample]) -> list[Sample]:
        for sample in samples:
            values = sample.values
            if self._watched.isdisjoint(values):
                continue  # a push sample that does not touch our inputs
            for name, compiled in self._plans:
                self._compute(sample, name, compiled)
            bad, uncertain = sample.bad, sample.uncertain
            for tag in self._watched.intersection(values):
                self._last[tag] = (values[tag], bad.get(tag), uncertain.get(tag))
        return samples

    def _compute(self, sample: Sample, name: str, compiled: Compiled) -> None:
        values, bad, uncertain = sample.values, sample.bad, sample.uncertain
        env: list[Any] = []
        doubt: str | None = None
        for tag in compiled.inputs:
            value = values.get(tag, _MISSING)
            if value is _MISSING:
                last = self._last.get(tag)
                if last is None:
                    return self._set_bad(sample, name, f"input {tag}: no reading yet")
                value, error, reason = last
            else:
                error = bad.get(tag) if bad else None
                reason = uncertain.get(tag) if uncertain else None
            if error is not None:
                return self._set_bad(sample, name, f"input {tag}: {error}")
            if not isinstance(value, _NUMBERS):
                return self._set_bad(sample, name, f"input {tag}: not a number")
            if reason is not None and doubt is None:
                doubt = f"input {tag}: {reason}"
            env.append(value)
        try:
            values[name] = evaluate(compiled, env)
        except EvalError as err:
            return self._set_bad(sample, name, str(err))
        if doubt is not None:
            uncertain[name] = doubt
        return None

    @staticmethod
    def _set_bad(sample: Sample, name: str, error: str) -> None:
        sample.values[name] = None
        sample.bad[name] = error


def make_computed(config: DeviceConfig) -> ComputedStep | None:
    return ComputedStep(config) if config.computed else None
