"""Logging for a service that runs under systemd for years.

Everything goes to stderr, one record per line, because journald (or a
container runtime, or a terminal) is what stores and rotates logs; a file of
our own on a Raspberry Pi's SD card would wear it out and fill it up.

Text format, the default::

    2026-11-28T21:10:56.123Z WARNING modbus [press-1]: timeout reading HR100
    <4>WARNING modbus [press-1]: timeout reading HR100      (under journald)

Under journald the timestamp is left out (the journal has its own, so
``journalctl`` would show it twice) and each line starts with a syslog
priority prefix such as ``<4>``: journald strips it and stores the level, so
``journalctl -u edge-agent -p warning`` works.  Every line of a traceback
gets the prefix too, or journald would file them as info.

JSON format (``fmt="json"``), for log shippers: one object per line with the
keys ``ts``, ``level``, ``logger``, ``message``, ``device``, ``exc``.

Secrets: :func:`register_secret` adds a value (a resolved password, a
key) that is replaced by ``***`` in every line this module writes, whatever
logger or library produced it, including tracebacks.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import re
import sys
import threading
import urllib.parse
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import BaseModel, SecretStr

from agent.runtime.log_noise import LibraryNoise
from agent.sdk.types import SecretText

__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "redact",
    "register_secret",
    "register_secrets_from",
    "set_level",
    "setup_logging",
    "under_journald",
]

REDACTED = "***"

# Level names accepted from the config file and the `log_level` command.
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# syslog priorities (RFC 5424) that journald reads from a "<N>" line prefix.
_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

# Protocol libraries that are chatty at INFO (asyncua logs every session
# step); they stay at WARNING unless the operator asks for them by name.
_NOISY_LIBRARIES = ("asyncua", "pymodbus", "aiomqtt", "paho")

# Set on our handler so setup_logging() can be called again (tests, reload)
# without stacking handlers.
_HANDLER_MARK = "_edge_agent_handler"


def _level(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        names = ", ".join(n for n in _LEVELS if n != "warn")
        raise ValueError(f"unknown log level {level!r}; use one of: {names}") from None


class _Secrets:
    """The registered secrets, as one regex rebuilt on each registration.

    Logging happens from other threads too (pymodbus, asyncua executors),
    so the pattern is swapped atomically and only registration locks.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if not value:
            return  # an empty secret would "match" everywhere
        # The forms a value takes once a library has printed it: as is, in a
        # repr or JSON string (escaped quotes and backslashes), in a URL.
        forms = {
            value,
            repr(value)[1:-1],
            json.dumps(value)[1:-1],
            urllib.parse.quote(value, safe=""),
            urllib.parse.quote_plus(value, safe=""),
        }
        with self._lock:
            self._values |= {f for f in forms if f}
            # Longest first, so a secret containing another is hidden whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(REDACTED, text)


_secrets = _Secrets()


def register_secret(value: str) -> None:
    """Never let ``value`` appear in a log line from now on.

    Call it with every resolved ``${env:..}``/``${file:..}`` value (the
    config loader's ``SecretText`` strings) before anything may log them.
    """
    _secrets.add(str(value))


def register_secrets_from(tree: object) -> int:
    """Register every secret inside a loaded config; returns how many.

    Walks pydantic models, dataclasses (a ``Site``), dicts, lists and
    tuples, and registers each ``SecretStr`` field and each ``SecretText``
    (a resolved ``${env:..}``/``${file:..}`` reference), so a driver's own
    password field is covered without the core knowing its name.
    """
    found = 0
    seen: set[int] = set()
    stack: list[object] = [tree]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SecretStr):
            register_secret(node.get_secret_value())
            found += 1
        elif isinstance(node, SecretText):
            register_secret(node)
            found += 1
        elif isinstance(node, BaseModel):
            stack.extend(getattr(node, name) for name in type(node).model_fields)
        elif is_dataclass(node) and not isinstance(node, type):
            stack.extend(getattr(node, f.name) for f in fields(node))
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set | frozenset):
            stack.extend(node)
    return found


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    return _secrets.redact(text)


def _clear_secrets() -> None:
    """For tests: forget every registered secret."""
    _secrets.clear()


def _component(name: str) -> str:
    # "agent.scheduler" -> "scheduler", "drivers.modbus.driver" ->
    # "modbus.driver": the package prefix is the same on every line.
    for prefix in ("agent.", "drivers."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _exc_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts = []
    # Cached on the record, as logging.Formatter.format does.
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


def _iso_ts(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """``LEVEL component [device]: message``, journald-aware, redacted."""

    def __init__(self, *, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        device = getattr(record, "device", None)
        where = _component(record.name) + (f" [{device}]" if device else "")
        text = f"{record.levelname} {where}: {record.getMessage()}"
        exc = _exc_text(self, record)
        if exc:
            text = f"{text}\n{exc}"
        text = _secrets.redact(text)
        if not self.journald:
            return f"{_iso_ts(record.created)} {text}"
        prio = _SYSLOG_PRIORITY.get(record.levelno)
        if prio is None:  # custom levels: the nearest standard one below
            prio = 7 if record.levelno < logging.INFO else 6
        return "\n".join(f"<{prio}>{line}" for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for Loki/Fluent Bit/Vector and the like."""

    def format(self, record: logging.LogRecord) -> str:
        device = getattr(record, "device", None)
        exc = _exc_text(self, record)
        # Redact field by field, before JSON escaping changes how a secret
        # with quotes or backslashes is spelled.
        obj: dict[str, Any] = {
            "ts": _iso_ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _secrets.redact(record.getMessage()),
            "device": _secrets.redact(str(device)) if device is not None else None,
            "exc": _secrets.redact(exc) if exc else None,
        }
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def under_journald(stream: TextIO) -> bool:
    """True when ``stream`` is the journal stream systemd gave us.

    systemd sets ``JOURNAL_STREAM=DEV:INODE`` for the stream it connected;
    comparing it with our stderr tells a service from a program that only
    inherited the variable (e.g. started from a service's shell).
    """
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return True  # cannot tell: trust the variable, as the spec says
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str = "info", fmt: str = "text", *, stream: TextIO | None = None) -> None:
    """Send all logging to stderr (or ``stream``) in ``fmt`` at ``level``.

    ``fmt`` is ``"text"`` or ``"json"``.  Safe to call again: it replaces the
    handler it installed before.  Raises ``ValueError`` for an unknown level
    or format.
    """
    _level(level)  # fail before touching any handler
    out = stream if stream is not None else sys.stderr
    formatter: logging.Formatter
    if fmt == "text":
        formatter = TextFormatter(journald=under_journald(out))
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}; use text or json")
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    # Library lines the agent reports itself (a drain, an OPC UA restart).
    handler.addFilter(LibraryNoise())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        # Ours from an earlier call, or a basicConfig() one: two handlers on
        # one stream print every line twice.
        if getattr(old, _HANDLER_MARK, False) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    # warnings.warn() from libraries become log lines, redacted like the rest.
    logging.captureWarnings(True)
    set_level(level)
    if stream is None and not faulthandler.is_enabled():
        # A hung loop ends with systemd's watchdog SIGABRT: print every
        # thread's stack to the journal first, so the hang can be found.
        with contextlib.suppress(AttributeError, ValueError, OSError):
            faulthandler.enable(file=sys.stderr, all_threads=True)


def set_level(level: str, logger: str | None = None) -> None:
    """Change the level at run time (the ``log_level`` remote command).

    Without ``logger`` the agent's own level changes, and the chatty protocol
    libraries follow it only at ``warning`` and above.  With ``logger`` (for
    example ``"pymodbus"``) only that logger changes, to debug one library.
    """
    numeric = _level(level)
    if logger is not None:
        logging.getLogger(logger).setLevel(numeric)
        return
    logging.getLogger().setLevel(numeric)
    for name in _NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
