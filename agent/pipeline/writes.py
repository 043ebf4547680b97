"""The one guarded write path, for the CLI and for remote management alike.

The core checks what every protocol shares (``writable``, ``min``/``max``)
and writes an audit line; the driver checks the type's range, writes and
reads back.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from agent.sdk.driver import Driver, WriteRefused

__all__ = ["guarded_write"]

audit = logging.getLogger("agent.audit")


def _check_bounds(value: Any, lo: float | None, hi: float | None) -> None:
    if lo is None and hi is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRefused(f"value {value!r} is not a number; the tag has bounds")
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteRefused(f"value {value!r} is not finite")
    if lo is not None and value < lo:
        raise WriteRefused(f"value {value} is below min {lo}")
    if hi is not None and value > hi:
        raise WriteRefused(f"value {value} is above max {hi}")


async def guarded_write(driver: Driver, tag_name: str, value: Any, *, origin: str) -> Any:
    """Write one tag through every guard; return the value read back.

    Raises WriteRefused (nothing sent) or DriverError (the device failed).
    ``origin`` says who asked (``cli``, ``remote:<command id>``) for the audit.
    """
    device = driver.config.name
    tag = driver.config.find_tag(tag_name)
    try:
        if tag is None:
            raise WriteRefused(f"device {device} has no tag {tag_name!r}")
        if not tag.writable:
            raise WriteRefused(f"tag {device}.{tag_name} is not writable")
        _check_bounds(value, tag.min, tag.max)
        read_back = await driver.write(tag_name, value)
    except Exception as err:
        audit.warning("write %s.%s=%r by %s refused/failed: %s", device, tag_name, value, origin, err)
        raise
    audit.info("write %s.%s=%r by %s ok, read back %r", device, tag_name, value, origin, read_back)
    return read_back
