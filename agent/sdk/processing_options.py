"""Edge-processing keys every device and tag has, whatever its driver.

``report``, ``deadband``, ``heartbeat`` and ``stale_after`` may be given on
a device and on each tag (the tag's wins); ``range: [lo, hi]`` is per tag
(it gives a percent deadband its meaning).  The sdk's ``DeviceConfig`` and
``TagConfig`` inherit these mixins, so every driver's model has them and no
driver has to know about them.

Cross-field mistakes (a percent without a range, a heartbeat or stale_after
shorter than the poll) are reported on the key that is wrong, as
``devices[0].tags[3].deadband``, so ``edge-agent check`` prints the line.
:func:`tag_policy` turns a device and a tag into the settings the
processing stage plans with (done once, not per reading).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agent.sdk.types import parse_duration

__all__ = [
    "REPORT_DEFAULT",
    "Deadband",
    "ProcessingDeviceOptions",
    "ProcessingTagOptions",
    "Report",
    "TagPolicy",
    "deadband_percent",
    "tag_policy",
]

Report = Literal["always", "change"]

#: ``report`` when neither the device nor the tag says: the json format's
#: default (sparkplug_b's is ``change``; its encoder passes that to the stage).
REPORT_DEFAULT: Report = "always"

_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _parse_deadband(value: Any) -> Any:
    """``0.5`` (absolute, the tag's units) or ``"2%"`` (of the tag's range)."""
    if isinstance(value, bool):
        raise ValueError("expected a number (0.5) or a percentage of the range (2%)")
    if isinstance(value, str):
        match = _PERCENT_RE.match(value)
        if match:
            pct = float(match.group(1))
            if pct > 100:
                raise ValueError(f"a percent deadband must be 0..100, not {value!r}")
            return f"{pct:g}%"
        try:
            value = float(value)
        except ValueError:
            raise ValueError("expected a number (0.5) or a percentage of the range (2%), "
                             f"not {value!r}") from None
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"a deadband must be a finite number >= 0, not {value!r}")
        return float(value)
    raise ValueError("expected a number (0.5) or a percentage of the range (2%)")


#: An absolute deadband (float) or a percentage of the tag's range ("2%").
Deadband = Annotated[float | str, BeforeValidator(_parse_deadband)]


def deadband_percent(deadband: float | str | None) -> float | None:
    """The percentage of a ``"2%"`` deadband, None for an absolute one or none."""
    return float(deadband[:-1]) if isinstance(deadband, str) else None


def _positive_duration(value: Any) -> Any:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than 0")
    return seconds


PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    report: Report | None = Field(
        None, description="always: every reading; change: by exception (default: the format's)")
    deadband: Deadband | None = Field(
        None, description="change: a number moves at least this much (0.5), or 2% of range")
    heartbeat: PositiveDuration | None = Field(
        None, description="change: an unchanged tag is sent again at least this often")
    stale_after: PositiveDuration | None = Field(
        None, description="a good value unchanged this long gets uncertain: stale")


class ProcessingTagOptions(_Common):
    """The tag's own keys (each overrides the device's)."""

    range: tuple[float, float] | None = Field(
        None, description="[lo, hi]: the span a percent deadband is taken of")

    @field_validator("range")
    @classmethod
    def _ordered(cls, span: tuple[float, float] | None) -> tuple[float, float] | None:
        if span is not None and not (math.isfinite(span[0]) and math.isfinite(span[1])
                                     and span[0] < span[1]):
            raise ValueError("range must be [lo, hi] with lo < hi")
        return span


def _error(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc,
                            input=value)


class ProcessingDeviceOptions(_Common):
    """The device's defaults for its tags, and the checks across device and tags."""

    def percent_needs_range(self) -> bool:
        """Whether a percent deadband needs ``range`` on the tag (drivers may relax it:
        an OPC UA server applies one against the node's own EURange)."""
        return True

    @model_validator(mode="after")
    def _cross_checks(self) -> Any:
        poll = float(getattr(self, "poll", 0.0))
        tags: Sequence[Any] = getattr(self, "tags", ())
        errors: list[InitErrorDetails] = []
        for key in ("heartbeat", "stale_after"):
            value = getattr(self, key)
            if value is not None and value < poll:
                errors.append(_error((key,), f"{key} {value:g}s is shorter than the poll "
                                     f"({poll:g}s): every poll would send", value))
        needs_range = self.percent_needs_range()
        no_range: list[str] = []
        for i, tag in enumerate(tags):
            if not isinstance(tag, ProcessingTagOptions):
                continue
            for key in ("heartbeat", "stale_after"):
                value = getattr(tag, key)
                if value is not None and value < poll:
                    errors.append(_error(("tags", i, key), f"{key} {value:g}s is shorter than "
                                         f"the device's poll ({poll:g}s)", value))
            if not needs_range or tag.range is not None:
                continue
            if deadband_percent(tag.deadband) is not None:
                errors.append(_error(("tags", i, "deadband"),
                                     f"a percentage deadband ({tag.deadband}) needs the tag's "
                                     "range: [lo, hi]", tag.deadband))
            elif tag.deadband is None and deadband_percent(self.deadband) is not None:
                no_range.append(str(getattr(tag, "name", i)))
        if no_range:
            shown = ", ".join(no_range[:5]) + (f" and {len(no_range) - 5} more"
                                               if len(no_range) > 5 else "")
            errors.append(_error(("deadband",), f"a percentage deadband ({self.deadband}) needs "
                                 f"a range: [lo, hi] on every tag it applies to; no range on "
                                 f"{shown} (give them a range or their own deadband)",
                                 self.deadband))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


@dataclass(frozen=True, slots=True)
class TagPolicy:
    """What the processing stage does with one tag, resolved once at plan time."""

    report: Report
    #: Absolute deadband in the tag's units; 0.0 means any change is sent.
    deadband: float
    heartbeat: float | None
    stale_after: float | None


def tag_policy(device: ProcessingDeviceOptions, tag: ProcessingTagOptions,
               default_report: Report = REPORT_DEFAULT) -> TagPolicy:
    """The tag's effective settings: the tag's keys, else the device's, else defaults.

    A percent deadband without a range (allowed only where the driver says
    the peer applies it) becomes 0 here: the local stage then sends every change.
    """
    deadband = tag.deadband if tag.deadband is not None else device.deadband
    pct = deadband_percent(deadband)
    if pct is not None:
        absolute = 0.0 if tag.range is None else (tag.range[1] - tag.range[0]) * pct / 100
    else:
        absolute = float(deadband) if deadband is not None else 0.0
    return TagPolicy(
        report=tag.report or device.report or default_report,
        deadband=absolute,
        heartbeat=tag.heartbeat if tag.heartbeat is not None else device.heartbeat,
        stale_after=tag.stale_after if tag.stale_after is not None else device.stale_after,
    )

