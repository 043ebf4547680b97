"""Talking to systemd: readiness, status and a watchdog that means something.

:class:`Notifier` speaks the ``sd_notify`` protocol (one datagram of
``KEY=value`` lines to the unix socket named by ``NOTIFY_SOCKET``) with the
standard library only.  Outside systemd it is a no-op, so ``edge-agent run``
behaves the same in a terminal.

:class:`Watchdog` turns ``WatchdogSec=`` into a liveness check of the
agent's own loops: each core loop (the uplink, the buffer writer) registers
a heartbeat and calls it whenever it makes progress; ``WATCHDOG=1`` goes out
only while every heartbeat is fresh and the event loop runs.  A hung commit,
a dead uplink task or a blocked loop therefore stops the pings and systemd
restarts the agent, which a ping from a timer alone would never do.

Devices are not watched here: the scheduler supervises them and restarts a
stuck one alone, so one bad device never restarts the whole agent.

Typical wiring (``agent.runtime.agent``)::

    notifier = Notifier.from_env()
    watchdog = Watchdog.from_env(notifier)
    beat = watchdog.heartbeat("uplink", stale_after=60.0)   # call beat() per loop turn
    tg.create_task(watchdog.run(), name="watchdog")
    ...
    notifier.ready()            # devices and uplink started
    notifier.status("4 devices, uplink connected, buffer 0")
    notifier.reloading()        # on SIGHUP, then ready() when applied
    notifier.stopping()         # on SIGTERM
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Notifier", "Watchdog"]

log = logging.getLogger("agent.systemd")


class Notifier:
    """Sends ``sd_notify`` messages; every method is a no-op without a socket.

    Sending never raises: a lost status line must not take the agent down.
    """

    def __init__(self, address: str | None) -> None:
        self._address: str | None = None
        self._sock: socket.socket | None = None
        if not address:
            return
        if address.startswith("@"):
            # Abstract namespace: a leading NUL instead of the "@".
            address = "\0" + address[1:]
        elif not address.startswith("/"):
            log.warning("NOTIFY_SOCKET=%s is not a unix socket path; not notifying", address)
            return
        self._address = address
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # Never block the event loop: if systemd's queue is full we drop.
        sock.setblocking(False)
        self._sock = sock

    @classmethod
    def from_env(cls) -> Notifier:
        """The notifier for ``$NOTIFY_SOCKET`` (a no-op when it is unset)."""
        return cls(os.environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value`` each) in one datagram; True if sent."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode("utf-8"), self._address)
        except OSError as err:
            log.debug("sd_notify %s failed: %s", fields[0] if fields else "", err)
            return False
        return True

    def ready(self) -> bool:
        """Startup (or a reload) is complete: ``systemctl start`` returns."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """One line shown by ``systemctl status``; newlines would end the field."""
        line = " ".join(text.split())
        return self.notify(f"STATUS={line}")

    def stopping(self) -> bool:
        """Shutdown has begun (SIGTERM): systemd shows "deactivating"."""
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """A reload (SIGHUP) has begun; call :meth:`ready` when it is applied.

        systemd requires ``MONOTONIC_USEC`` beside ``RELOADING=1`` so it can
        tell this reload from an earlier one.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog(self) -> bool:
        """Keep-alive ping; only :class:`Watchdog` should call this."""
        return self.notify("WATCHDOG=1")


def watchdog_interval_from_env() -> float | None:
    """``WatchdogSec=`` in seconds, or None when there is no watchdog for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    # systemd sets WATCHDOG_PID for the main process; a child that inherited
    # the variables must not ping on its parent's behalf.
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number; watchdog off", usec)
        return None
    return value / 1_000_000 if value > 0 else None


@dataclass
class _Beat:
    stale_after: float
    last: float


class Watchdog:
    """Pings systemd only while every registered loop is making progress."""

    def __init__(
        self,
        notifier: Notifier,
        interval: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``interval`` is ``WatchdogSec`` in seconds (None: inactive)."""
        self._notifier = notifier
        self.interval = interval if interval and interval > 0 else None
        self._clock = clock
        self._beats: dict[str, _Beat] = {}
        self._withholding = False
        self.pings = 0  # sent so far; for status and tests

    @classmethod
    def from_env(cls, notifier: Notifier) -> Watchdog:
        """From ``$WATCHDOG_USEC``/``$WATCHDOG_PID`` (inactive when unset)."""
        return cls(notifier, watchdog_interval_from_env())

    @property
    def active(self) -> bool:
        return self.interval is not None and self._notifier.enabled

    def heartbeat(self, name: str, stale_after: float) -> Callable[[], None]:
        """Register loop ``name``; returns the function it calls on progress.

        The loop counts as hung once ``stale_after`` seconds pass without a
        call.  Pick it above the loop's longest legitimate pause (for a
        poll loop: poll period plus timeout plus reconnect backoff cap).
        Registering a name again replaces the old heartbeat.
        """
        if stale_after <= 0:
            raise ValueError("stale_after must be positive")
        entry = _Beat(stale_after=stale_after, last=self._clock())
        self._beats[name] = entry
        clock = self._clock

        def beat() -> None:
            entry.last = clock()

        return beat

    def unregister(self, name: str) -> None:
        """Stop watching ``name`` (a device removed by a config change)."""
        self._beats.pop(name, None)

    def stale(self) -> list[str]:
        """Names of the loops whose last heartbeat is too old, oldest first."""
        now = self._clock()
        late = [(now - b.last - b.stale_after, n) for n, b in self._beats.items()]
        return [name for over, name in sorted(late, reverse=True) if over > 0]

    def check(self) -> bool:
        """Ping if every loop is fresh; otherwise log (once) and withhold."""
        stale = self.stale()
        if stale:
            if not self._withholding:
                now = self._clock()
                ages = ", ".join(f"{n} ({now - self._beats[n].last:.0f}s)" for n in stale)
                log.error("watchdog: no progress from %s; withholding keep-alive", ages)
                self._notifier.status(f"watchdog: stalled loops: {', '.join(stale)}")
                self._withholding = True
            return False
        if self._withholding:
            log.info("watchdog: all loops making progress again")
            self._withholding = False
        if self._notifier.watchdog():
            self.pings += 1
        return True

    async def run(self) -> None:
        """Ping every half interval while all loops are fresh; runs until cancelled.

        Returns at once when there is no watchdog (not under systemd, or no
        ``WatchdogSec=``), so it can sit in a TaskGroup unconditionally.
        """
        if not self.active or self.interval is None:
            return
        period = self.interval / 2
        while True:
            self.check()
            await asyncio.sleep(period)
