"""Field types for human units: durations (``500ms``), sizes (``512MB``), secrets.

Drivers use these in their own option models.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, PlainSerializer, SecretStr

__all__ = [
    "ByteSize",
    "Duration",
    "Secret",
    "SecretText",
    "check_url",
    "parse_duration",
    "parse_size",
]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")

# Binary multiples: "128KB" is 131072 bytes, as AWS IoT Core counts its limit.
_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1024, "kib": 1024, "k": 1024,
    "mb": 1024**2, "mib": 1024**2, "m": 1024**2,
    "gb": 1024**3, "gib": 1024**3, "g": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

# Upper bounds: past them a value is a typo or an attack, and an infinite or
# 400-digit one would overflow a sleep, a timestamp or SQLite's 64-bit int.
MAX_DURATION_S = 3650 * 86400.0
MAX_SIZE = 1024**4  # 1024GB


def _bounded_duration(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        raise ValueError("a duration must be finite and at most 3650d")
    return seconds


def parse_duration(value: Any) -> Any:
    """'500ms', '1s', '5m', '2h', '7d' or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 1s, 5m, 7d")
    if isinstance(value, int) and abs(value) > MAX_DURATION_S:
        return _bounded_duration(math.inf)  # float() of a huge int overflows
    if isinstance(value, int | float):
        return _bounded_duration(float(value))
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return _bounded_duration(float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"])
    raise ValueError(f"expected a duration like 500ms, 1s, 5m, 7d, not {value!r}")


def parse_size(value: Any) -> Any:
    """'512MB', '128KB', '1GiB' or a bare number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 128KB, 512MB")
    too_big = ValueError(f"a size must be at most {MAX_SIZE // 1024**3}GB")
    if isinstance(value, int):
        if value > MAX_SIZE:
            raise too_big
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            size = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
            if not size <= MAX_SIZE:  # also inf, from 400 digits
                raise too_big
            return int(size)
    raise ValueError(f"expected a size like 128KB, 512MB, 1GB, not {value!r}")


def check_url(url: str, schemes: tuple[str, ...], what: str = "url") -> str:
    """A ``scheme://host[:port]`` address without credentials in it, or ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(f"{what} must start with {' or '.join(s + '://' for s in schemes)}")
    if not parts.hostname:
        raise ValueError(f"{what} has no host")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"{what} has an invalid port") from None
    if parts.username or parts.password:
        raise ValueError(f"put credentials in username/password, not in the {what}")
    return url


def _require_reference(value: Any) -> Any:
    # Secrets must come from ${env:...} or ${file:...}: an inline password
    # ends up in backups, diffs and config pushes.  The loader marks
    # resolved references with SecretText; the value itself is never echoed.
    if isinstance(value, SecretText):
        return str(value)
    if isinstance(value, SecretStr):
        return value
    raise ValueError("secrets must be given as ${env:NAME} or ${file:/path}, not inline")


class SecretText(str):
    """A string produced by resolving ``${env:..}``/``${file:..}``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'**********'"


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
Secret = Annotated[
    SecretStr,
    BeforeValidator(_require_reference),
    PlainSerializer(lambda s: "**********", return_type=str),
]
