"""Clock quality: flag samples taken while the gateway's clock is unsynchronised.

A Raspberry Pi has no real-time clock: after boot its wall clock is wrong
(often the last shutdown time) until NTP syncs and steps it.  While the
kernel says the clock is not synchronised, every stored sample gets
``"clock": "unsynced"``.  When it syncs, the samples still in the buffer are
re-stamped: the monotonic clock does not jump, so the gap between a
sample's wall time and the monotonic time at the moment it was stored
(``wall - mono``, its *offset*) is the error to take out, measured again
once the clock is right.

What cannot be corrected, and keeps the flag: samples stored by an earlier
run of the agent (before a reboot the monotonic clock restarted; the
offsets lived in memory), and samples whose timestamp did not come from
this clock (an OPC UA server's source timestamp outside the wall-clock
span this run saw while unsynced).

The kernel's view is read with ``adjtimex`` (read-only), as ``timedatectl``
does: synchronised when the estimated maximum error is below 16 s.  The
source is injectable: tests never touch this machine's clock.

A machine whose clock is right without the kernel's NTP discipline (a
battery-backed RTC on an isolated network, a VM the hypervisor keeps on
time, a CI container) reports "unsynchronised" forever; there, set
``EDGE_AGENT_CLOCK=trusted`` in the service's environment to never flag.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from agent.sdk import Sample

__all__ = ["UNSYNCED", "AdjtimexClock", "ClockMonitor", "ClockSource", "Restamp"]

log = logging.getLogger("agent.pipeline.processing.clock")

UNSYNCED = "unsynced"
# systemd's ntp_synced(): the kernel's maxerror (µs) reaches 16 s when unsynced.
_MAXERROR_UNSYNCED_US = 16_000_000
# Offsets differing by less than this belong to one epoch (slew, not a step).
_STEP_MS = 1000
# A poll's timestamp is taken before the sample reaches the stage.
_READ_SLACK_MS = 60_000

#: Re-stamps flagged samples with the given ``ts -> new ts or None``; returns how many.
Restamp = Callable[[Callable[[int], int | None]], Awaitable[int]]


class ClockSource(Protocol):
    def synced(self) -> bool:
        """Whether the wall clock is synchronised (unknown counts as yes)."""
        ...

    def wall_ms(self) -> int: ...

    def mono_ms(self) -> int: ...


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>; only the leading fields are read, the
    # padding covers the rest (and the reserved ints) on 32 and 64 bits.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


class AdjtimexClock:
    """The machine's clocks; ``synced()`` asks the kernel (``adjtimex``, modes 0)."""

    def __init__(self) -> None:
        self._adjtimex: Callable[..., int] | None = None
        if os.environ.get("EDGE_AGENT_CLOCK") == "trusted":
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            self._adjtimex = libc.adjtimex
        except (OSError, AttributeError):
            log.info("adjtimex is not available: the clock is taken as synchronised")

    def synced(self) -> bool:
        if self._adjtimex is None:
            return True
        tx = _Timex()
        if self._adjtimex(ctypes.byref(tx)) < 0:
            return True
        return int(tx.maxerror) < _MAXERROR_UNSYNCED_US

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


@dataclass(slots=True)
class _Epoch:
    """A stretch of unsynchronised time with one wall-minus-monotonic offset."""

    offset: int
    lo: int  # wall ms
    hi: int


class ClockMonitor:
    """Marks samples while the clock is unsynchronised; re-stamps on sync."""

    def __init__(self, source: ClockSource | None = None, *, check_every: float = 1.0) -> None:
        self.source: ClockSource = source or AdjtimexClock()
        self.check_every_ms = int(check_every * 1000)
        self.on_sync: list[Restamp] = []
        self.synced = True
        self._next_check = -1
        self._epochs: list[_Epoch] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.check()

    def check(self) -> None:
        """Ask the source now (the stage asks at most every ``check_every``)."""
        self._next_check = self.source.mono_ms() + self.check_every_ms
        synced = bool(self.source.synced())
        if synced == self.synced:
            return
        self.synced = synced
        if not synced:
            log.warning("the system clock is not synchronised: samples are flagged "
                        '"clock": "unsynced" until it is')
            return
        epochs, self._epochs = self._epochs, []
        now_offset = self.source.wall_ms() - self.source.mono_ms()
        if epochs:
            steps = ", ".join(f"{(now_offset - e.offset) / 1000:+.1f} s" for e in epochs)
            log.info("the system clock is synchronised (stepped by %s): re-stamping the "
                     "buffered samples", steps)
        else:
            log.info("the system clock is synchronised")
        fix = _fixer(epochs, now_offset)
        for restamp in self.on_sync:
            self._start(restamp, fix)

    def _start(self, restamp: Restamp, fix: Callable[[int], int | None]) -> None:
        async def run() -> None:
            try:
                count = await restamp(fix)
            except Exception:  # a failed re-stamp leaves the flags: say so, go on
                log.exception("re-stamping buffered samples failed; they keep the flag")
                return
            log.info("re-stamped %d buffered samples with the synchronised clock", count)

        try:
            task = asyncio.get_running_loop().create_task(run(), name="clock-restamp")
        except RuntimeError:
            return  # no loop (a unit test of marking): nothing buffered to fix
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def mark(self, samples: list[Sample]) -> list[Sample]:
        """Flag ``samples`` (in place) while the clock is unsynchronised."""
        if not samples:
            return samples
        if self.source.mono_ms() >= self._next_check:
            self.check()
        if self.synced:
            return samples
        wall = self.source.wall_ms()
        offset = wall - self.source.mono_ms()
        epoch = self._epochs[-1] if self._epochs else None
        if epoch is None or abs(offset - epoch.offset) > _STEP_MS:
            epoch = _Epoch(offset, wall, wall)
            self._epochs.append(epoch)
        epoch.lo = min(epoch.lo, wall)
        epoch.hi = max(epoch.hi, wall)
        for sample in samples:
            sample.clock = UNSYNCED
        return samples


def _fixer(epochs: list[_Epoch], now_offset: int) -> Callable[[int], int | None]:
    """``ts -> corrected ts``, or None for a ts this run's epochs do not cover."""

    def fix(ts: int) -> int | None:
        # The latest epoch first: after a backwards step its span may overlap an older one.
        for epoch in reversed(epochs):
            if epoch.lo - _READ_SLACK_MS <= ts <= epoch.hi:
                return ts + now_offset - epoch.offset
        return None

    return fix
