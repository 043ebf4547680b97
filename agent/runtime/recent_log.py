"""The last problems from the log, kept in memory for the status page.

A bounded ring of WARNING-and-above records (newest last), redacted like
every other log line, so a technician sees "device press-1 down: timeout"
without ``journalctl``.  Installed on the root logger only while the HTTP
endpoint runs; it costs one deque append per warning.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from agent.runtime.logs import redact

__all__ = ["RecentProblems"]

# Enough for a screen of history; the journal keeps the rest.
DEFAULT_SIZE = 50
# A traceback or a huge payload in a message must not bloat the page.
MAX_MESSAGE = 300


class RecentProblems(logging.Handler):
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        super().__init__(logging.WARNING)
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = redact(record.getMessage())
        except Exception:  # a bad format string must not break logging
            text = redact(str(record.msg))
        if len(text) > MAX_MESSAGE:
            text = text[: MAX_MESSAGE - 3] + "..."
        device = getattr(record, "device", None)
        self._ring.append({
            "ts_ms": int(record.created * 1000),
            "level": record.levelname.lower(),
            "logger": record.name,
            "device": None if device is None else redact(str(device)),
            "message": text,
        })

    def items(self) -> list[dict[str, Any]]:
        return list(self._ring)

    def install(self) -> None:
        root = logging.getLogger()
        if self not in root.handlers:
            root.addHandler(self)

    def remove(self) -> None:
        logging.getLogger().removeHandler(self)
