"""A bounded stop: every step gets a deadline, and the log names what held it up.

systemd kills the agent ``TimeoutStopSec`` (30 s in deploy/edge-agent.service)
after SIGTERM, mid-commit if need be; a broker that stops answering during a
drain used to hold the ``offline`` publish for the client's whole PUBACK
timeout (30 s at keepalive 30 s).  Each step of the stop now gets its own
share of that time; a step past it is named in the log and left behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

__all__ = ["STEP_TIMEOUTS", "bounded", "bounded_all"]

log = logging.getLogger("agent.app")

# Seconds per step of a stop; together well inside systemd's 30 s.
STEP_TIMEOUTS = {
    "devices": 5.0,  # each device task, in parallel: a driver closing its connection
    "offline": 2.0,  # the retained offline state (the broker's will covers a miss)
    "tasks": 5.0,  # uplink, buffer loop, watchdog, services
    "buffer": 10.0,  # the last commit: one fsync, more on a slow SD card
}


async def bounded(what: str, aw: Awaitable[Any], limit_s: float) -> bool:
    """Await ``aw`` for at most ``limit_s``; False (and a log line naming it) if it ran over.

    Unlike ``wait_for``, never waits on the cancellation of what ran over.
    """
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=limit_s)
    if not done:
        task.cancel()
        log.error("stop: %s did not finish within %.0f s; going on without it", what, limit_s)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.error("stop: %s failed: %r", what, task.exception())
    return True


async def bounded_all(steps: Mapping[str, Awaitable[Any]], limit_s: float) -> None:
    """Several steps in parallel, each bounded by the same ``limit_s``."""
    await asyncio.gather(*(bounded(what, aw, limit_s) for what, aw in steps.items()))
