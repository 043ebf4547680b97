"""One sample: what one poll read, or the changes sharing one source timestamp."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NOT_FINITE", "Sample", "now_ms"]

#: The one text a NaN or infinite reading carries in ``bad``, whatever the driver.
NOT_FINITE = "not a finite number"


def now_ms() -> int:
    """Wall-clock time as integer milliseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Sample:
    """``values`` has every tag of the sample; a failed tag is ``None`` there
    and its error string in ``bad``; a doubtful one keeps its value and gets
    a reason in ``uncertain``.  ``events`` (alarm events the processing stage
    raised at this sample) travel with it through the buffer and go out in
    the data message's ``events`` list, not inside the sample."""

    ts: int
    values: dict[str, Any]
    bad: dict[str, str] = field(default_factory=dict)
    uncertain: dict[str, str] = field(default_factory=dict)
    #: "unsynced" while the gateway's clock is not synchronised (then ``ts``
    #: may be wrong); None otherwise.  See agent/pipeline/processing/clock.py.
    clock: str | None = None
    # A tuple, so the common case (no events) allocates nothing; keyword-only
    # so fields added before it never shift positional arguments into it.
    events: tuple[dict[str, Any], ...] = field(default=(), kw_only=True)

    @classmethod
    def all_bad(cls, tags: list[str], error: str, ts: int | None = None) -> Sample:
        return cls(
            ts=now_ms() if ts is None else ts,
            values=dict.fromkeys(tags),
            bad=dict.fromkeys(tags, error),
        )

    def to_json_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"ts": self.ts, "values": self.values}
        if self.bad:
            obj["bad"] = self.bad
        if self.uncertain:
            obj["uncertain"] = self.uncertain
        if self.clock is not None:
            obj["clock"] = self.clock
        return obj
