"""What the retained ``state`` message says beyond online/offline, owned in one place.

Two facts a remote operator must see without reading logs: a config that was
refused (``config_error``) and a config that was undone (``rollback``).
Both stay until the next config is applied successfully.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["StateReport", "now_iso"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class StateReport:
    def __init__(self) -> None:
        self.config_error: str | None = None
        self.rollback: dict[str, Any] | None = None

    def set_config_error(self, text: str) -> None:
        """A config was refused; ``text`` says which and why (every problem)."""
        self.config_error = text

    def set_rollback(self, reason: str, *, bad: str, good: str) -> None:
        self.rollback = {"reason": reason, "from": bad, "to": good, "at": now_iso()}

    def clear(self) -> None:
        """A config was applied: earlier refusals and rollbacks are history."""
        self.config_error = None
        self.rollback = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.config_error is not None:
            out["config_error"] = self.config_error
        if self.rollback is not None:
            out["rollback"] = dict(self.rollback)
        return out
