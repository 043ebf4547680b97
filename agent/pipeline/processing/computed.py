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

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from agent.sdk import DeviceConfig, Sample
from agent.sdk.expressions import Compiled, EvalError, compile_expr, evaluate

__all__ = ["ComputedStep", "make_computed"]

_MISSING = object()
# Only numbers enter an expression: a string or a list could make ``*``
# build something huge, and means the expression was written for other data.
_NUMBERS = (int, float, bool)
_NUMBER_TYPES = frozenset(_NUMBERS)


class ComputedStep:
    """The computed tags of one device."""

    def __init__(self, config: DeviceConfig) -> None:
        self._plans: list[tuple[str, Compiled]] = [
            (c.name, compile_expr(c.expr)) for c in config.computed_order()
        ]
        computed = {name for name, _ in self._plans}
        #: Device tags the expressions read.
        self._watched = tuple(sorted({n for _, c in self._plans for n in c.inputs
                                      if n not in computed}))
        self._watched_set = frozenset(self._watched)
        # All inputs of a sample in one C call: the fast path's check.
        self._inputs_of: Callable[[dict[str, Any]], tuple[Any, ...]] = lambda v: ()
        if len(self._watched) == 1:
            one = itemgetter(self._watched[0])
            self._inputs_of = lambda v: (one(v),)
        elif self._watched:
            self._inputs_of = itemgetter(*self._watched)
        self._runs = [(name, c.run) for name, c in self._plans]
        #: The last reading of each input, for push devices whose samples
        #: carry only the tags that changed: (value, error, uncertain reason).
        self._last: dict[str, tuple[Any, str | None, str | None]] = {}
        #: The inputs of the last fast-path sample, turned into ``_last`` only
        #: when a sample needs them (most devices never do).
        self._last_inputs: tuple[Any, ...] | None = None

    def process(self, samples: list[Sample]) -> list[Sample]:
        for sample in samples:
            bad, uncertain = sample.bad, sample.uncertain
            # Quality of tags no expression reads (a tag that always fails) does not matter.
            if ((not bad or self._watched_set.isdisjoint(bad))
                    and (not uncertain or self._watched_set.isdisjoint(uncertain))):
                try:
                    inputs = self._inputs_of(sample.values)
                except KeyError:
                    pass  # an input is not in this sample
                else:
                    # Every input present and a number (a bool counts): no
                    # quality to carry, nothing to take from earlier samples.
                    if _NUMBER_TYPES.issuperset(map(type, inputs)) and self._fast(sample):
                        self._last_inputs = inputs
                        continue
            self._careful(sample)
        return samples

    def _fast(self, sample: Sample) -> bool:
        """Compute every tag; False on any failure (the careful path then says why)."""
        values = sample.values
        for name, run in self._runs:
            try:
                value = run(values)
            except (ArithmeticError, ValueError, TypeError, EvalError):
                return False
            if type(value) is float and value - value != 0.0:  # inf or nan
                return False
            values[name] = value
        return True

    def _careful(self, sample: Sample) -> None:
        values = sample.values
        if self._watched_set and self._watched_set.isdisjoint(values):
            return  # a push sample that does not touch our inputs
        if self._last_inputs is not None:
            self._last.update((tag, (v, None, None))
                              for tag, v in zip(self._watched, self._last_inputs, strict=True))
            self._last_inputs = None
        for name, compiled in self._plans:
            self._compute(sample, name, compiled)
        bad, uncertain = sample.bad, sample.uncertain
        for tag in self._watched_set.intersection(values):
            self._last[tag] = (values[tag], bad.get(tag), uncertain.get(tag))

    def _compute(self, sample: Sample, name: str, compiled: Compiled) -> None:
        values, bad, uncertain = sample.values, sample.bad, sample.uncertain
        env: dict[str, Any] = {}
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
            env[tag] = value
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
