"""Library log lines the agent already reports in its own words: dropped or rate-limited.

A backlog drain made aiomqtt log ``There are N pending publish calls.``
dozens of times within milliseconds, and an OPC UA server restart put
asyncua's whole ``Publish iteration crashed`` traceback in the journal every
second.  The uplink and the drivers log each of these situations once, in
terms an operator can act on; the library's copy only buries it.

The filter sits on the agent's log handler, so it sees every record
whatever logger (or child logger) produced it.  At ``log_level: debug``, or
with the library's logger set to debug by name (the ``log_level`` command),
everything passes untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["NOISE", "LibraryNoise", "Noise"]


@dataclass(frozen=True)
class Noise:
    logger: str  #: the library's logger (children included)
    message: str  #: the record's message template, before formatting
    every_s: float | None  #: one line per this many seconds; None: never
    why: str  #: who already reports it


NOISE = (
    Noise("mqtt", "There are %d pending publish calls.", None,
          "aiomqtt's count of its own in-flight publishes; the uplink bounds them "
          "(max_inflight) and a drain is expected to keep them high"),
    Noise("asyncua", "Publish iteration crashed; retrying in 1s", 300.0,
          "the OPC UA driver reports the lost session once per outage"),
)


def _is_under(name: str, logger: str) -> bool:
    return name == logger or name.startswith(logger + ".")


class LibraryNoise(logging.Filter):
    def __init__(self, rules: tuple[Noise, ...] = NOISE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.rules = rules
        self.clock = clock
        self._last: dict[Noise, float] = {}
        self._suppressed: dict[Noise, int] = {}

    def _rule(self, record: logging.LogRecord) -> Noise | None:
        for rule in self.rules:
            if record.msg == rule.message and _is_under(record.name, rule.logger):
                return rule
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        rule = self._rule(record)
        if rule is None:
            return True
        if (logging.getLogger().getEffectiveLevel() <= logging.DEBUG
                or logging.getLogger(rule.logger).getEffectiveLevel() <= logging.DEBUG):
            return True
        if rule.every_s is None:
            return False
        now = self.clock()
        last = self._last.get(rule)
        if last is not None and now - last < rule.every_s:
            self._suppressed[rule] = self._suppressed.get(rule, 0) + 1
            return False
        self._last[rule] = now
        text = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            # The exception's name says what happened; the traceback is the
            # library's internals, 30 lines of it every second.
            text += f" ({type(exc).__name__}: {exc})" if str(exc) else f" ({type(exc).__name__})"
        repeats = self._suppressed.pop(rule, 0)
        if repeats:
            text += f"; {repeats} more like it since the last one"
        text += f"; at most one line per {rule.every_s:g} s (log_level debug shows all)"
        record.msg, record.args = text, ()
        record.exc_info, record.exc_text = None, None
        return True
