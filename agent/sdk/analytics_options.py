"""Device options for edge analytics: ``computed``, ``aggregate``, ``alarms``.

Every device has them, whatever its driver: :class:`AnalyticsOptions` is a
base of :class:`agent.sdk.driver.DeviceConfig`.  Everything the processing
stage needs to trust is checked here, each problem at its own key (the
loader turns the location into ``FILE:LINE: key.path``): expressions
against the whitelist, unknown names, cycles, aggregate and alarm tags
that do not exist, and clear limits on the wrong side of their alarm.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from agent.sdk.expressions import compile_expr, names_in
from agent.sdk.types import Duration

__all__ = ["STATS", "AggregateWindow", "AlarmConfig", "AnalyticsOptions", "ComputedTag",
           "Severity", "Stat"]

# The same as agent.sdk.driver.NAME_PATTERN (that module imports this one).
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

Stat = Literal["min", "max", "mean", "last", "count", "sum", "stddev"]
STATS: tuple[Stat, ...] = ("min", "max", "mean", "last", "count", "sum", "stddev")
DEFAULT_STATS: tuple[Stat, ...] = ("min", "max", "mean", "last", "count")
Severity = Literal["info", "low", "medium", "high", "critical"]

Loc = tuple[str | int, ...]


class _Strict(BaseModel):
    # agent.sdk.driver.StrictModel's settings; that module imports this one.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class ComputedTag(_Strict):
    name: str = Field(pattern=_NAME, description="Name of the derived tag in samples")
    expr: str = Field(description="Safe expression over the device's tags, e.g. 'v * i / 1000'")
    unit: str | None = Field(None, description="Engineering unit, informational")

    @field_validator("expr")
    @classmethod
    def _syntax(cls, expr: str) -> str:
        compile_expr(expr)  # ExprError is a ValueError: reported at this key
        return expr


class AggregateWindow(_Strict):
    every: Duration = Field(ge=1, le=86400, description="Window length, aligned to the clock")
    tags: list[str] = Field(min_length=1, description="Tags (or computed tags) to aggregate")
    stats: list[Stat] = Field(default_factory=lambda: list(DEFAULT_STATS), min_length=1,
                              description="Stats sent per tag, as TAG.STAT")
    raw: bool = Field(True, description="false: send only the aggregates of these tags")

    @field_validator("every")
    @classmethod
    def _whole_ms(cls, every: float) -> float:
        if round(every * 1000) != every * 1000:
            raise ValueError("give the window in whole milliseconds")
        return every

    @field_validator("stats")
    @classmethod
    def _unique(cls, stats: list[Stat]) -> list[Stat]:
        if len(set(stats)) != len(stats):
            raise ValueError("a stat is listed twice")
        return stats


class AlarmConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, populate_by_name=True)

    name: str = Field(pattern=_NAME, description="Alarm name in events and status")
    tag: str = Field(description="Tag watched: a device tag, a computed tag or TAG.STAT")
    above: float | None = Field(None, description="Active when the value rises above this")
    below: float | None = Field(None, description="Active when the value falls below this")
    clear_below: float | None = Field(None, description="With above: cleared only below this")
    clear_above: float | None = Field(None, description="With below: cleared only above this")
    for_: Duration = Field(0.0, alias="for", ge=0, description="Past the limit this long first")
    severity: Severity = Field("medium", description="Carried in events")

    @model_validator(mode="after")
    def _limits(self) -> AlarmConfig:
        problems: list[tuple[Loc, str]] = []
        if (self.above is None) == (self.below is None):
            problems.append(((), "give exactly one of above or below"))
        if self.above is not None:
            if self.clear_above is not None:
                problems.append((("clear_above",), "with above, use clear_below"))
            if self.clear_below is not None and self.clear_below > self.above:
                problems.append((("clear_below",), f"must be at most above ({self.above:g}): "
                                 "an alarm above a limit clears below it"))
        if self.below is not None:
            if self.clear_below is not None:
                problems.append((("clear_below",), "with below, use clear_above"))
            if self.clear_above is not None and self.clear_above < self.below:
                problems.append((("clear_above",), f"must be at least below ({self.below:g}): "
                                 "an alarm below a limit clears above it"))
        raise_problems(problems, self)
        return self

    @property
    def limit(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    @property
    def clear(self) -> float:
        """The value the reading must pass back over to clear (the limit without hysteresis)."""
        if self.above is not None:
            return self.clear_below if self.clear_below is not None else self.above
        return self.clear_above if self.clear_above is not None else self.limit


def raise_problems(problems: Iterable[tuple[Loc, str]], data: Any) -> None:
    """Raise one ValidationError whose errors keep their own locations."""
    details = [InitErrorDetails(type=PydanticCustomError("analytics", "{message}",
                                                         {"message": message}),
                                loc=loc, input=data) for loc, message in problems]
    if details:
        raise ValidationError.from_exception_data("analytics", details)


def aggregate_names(windows: Iterable[AggregateWindow]) -> list[str]:
    """The ``TAG.STAT`` tags the windows add."""
    return [f"{tag}.{stat}" for w in windows for tag in w.tags for stat in w.stats]


class AnalyticsOptions(_Strict):
    """Mixed into every device's config (see :class:`agent.sdk.driver.DeviceConfig`)."""

    computed: list[ComputedTag] = Field(default_factory=list,
                                        description="Derived tags from safe expressions")
    aggregate: list[AggregateWindow] = Field(default_factory=list,
                                             description="Wall-clock windows, TAG.STAT tags")
    alarms: list[AlarmConfig] = Field(default_factory=list,
                                      description="Limit alarms with hysteresis and a delay")

    @model_validator(mode="after")
    def _analytics(self) -> AnalyticsOptions:
        if self.computed or self.aggregate or self.alarms:
            raise_problems(self._analytics_problems(), self)
        return self

    def _analytics_problems(self) -> list[tuple[Loc, str]]:
        tags = [t.name for t in getattr(self, "tags", ())]
        problems: list[tuple[Loc, str]] = []
        known = set(tags)
        computed_names: dict[str, int] = {}
        for i, c in enumerate(self.computed):
            if c.name in known or c.name in computed_names:
                problems.append((("computed", i, "name"), f"{c.name!r} is already a tag"))
            computed_names.setdefault(c.name, i)
        known |= set(computed_names)
        deps: dict[str, list[str]] = {}
        for i, c in enumerate(self.computed):
            used = names_in(c.expr)
            missing = [n for n in used if n not in known]
            for name in missing:
                problems.append((("computed", i, "expr"), _unknown(name, known)))
            deps[c.name] = [n for n in used if n in computed_names]
        problems.extend((("computed", computed_names[cycle[0]], "expr"),
                         "cycle: " + " -> ".join(cycle)) for cycle in _cycles(deps))
        derived: set[str] = set()
        for i, w in enumerate(self.aggregate):
            for j, tag in enumerate(w.tags):
                if tag not in known:
                    problems.append((("aggregate", i, "tags", j), _unknown(tag, known)))
            for name in aggregate_names([w]):
                if name.rpartition(".")[0] not in known:
                    continue  # reported above
                if name in known:
                    problems.append((("aggregate", i, "tags"), f"{name!r} is already a tag"))
                if name in derived:
                    problems.append((("aggregate", i, "tags"), f"{name!r} is aggregated twice"))
                derived.add(name)
        watchable = known | derived
        seen: set[str] = set()
        for i, a in enumerate(self.alarms):
            if a.name in seen:
                problems.append((("alarms", i, "name"), f"duplicate alarm name {a.name!r}"))
            seen.add(a.name)
            if a.tag not in watchable:
                problems.append((("alarms", i, "tag"), _unknown(a.tag, watchable)))
        return problems

    def computed_order(self) -> list[ComputedTag]:
        """Computed tags in the order they can be evaluated (inputs first)."""
        by_name = {c.name: c for c in self.computed}
        done: list[ComputedTag] = []
        placed: set[str] = set()

        def place(c: ComputedTag) -> None:
            if c.name in placed:
                return
            placed.add(c.name)
            for dep in names_in(c.expr):
                if dep in by_name:
                    place(by_name[dep])
            done.append(c)

        for c in self.computed:
            place(c)
        return done


def _unknown(name: str, known: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown tag {name!r}{hint}"


def _cycles(deps: dict[str, list[str]]) -> list[list[str]]:
    """Each cycle once, as a path that returns to its start."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in deps.get(name, ()):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                walk(dep)
        path.pop()
        state[name] = 2

    for name in deps:
        if name not in state:
            walk(name)
    return cycles
