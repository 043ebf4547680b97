"""One device's loop: poll on a wall-clock grid, or run a push stream, never silently dead.

- A poll loop ticks at multiples of its period (``12:00:01.000``,
  ``12:00:02.000``, ...): no drift, and devices with equal periods sample
  together.  A read that overruns its tick skips the missed ticks and counts
  them; it never stacks reads.
- While a device is down every tick still yields a sample, with every tag
  bad and the error, so the cloud sees the outage instead of silence.
  Reconnects follow the capped, jittered backoff.
- Logs once per outage: error when it starts, debug while it lasts, info
  when the device is back.
- A failure that is not the device's but the driver's (a ``TypeError``, a
  ``KeyError``: a bug) is logged with its traceback, counted in
  ``device_restarts``, and the driver instance is replaced by a fresh one.
  So is a device that stops making progress: a push stream with no data and
  no error for 3 periods, a read that never returns.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.sdk.backoff import Backoff
from agent.sdk.counters import DeviceCounters
from agent.sdk.driver import DeviceConfig, Driver, DriverContext, DriverError, DriverPlugin
from agent.sdk.links import SharedLinks
from agent.sdk.readings import Sample

__all__ = ["DeviceRunner", "Sink", "Stalled", "is_expected"]

Sink = Callable[[str, list[Sample]], None]

# A connect that takes longer than this is treated as failed.
CONNECT_TIMEOUT = 30.0
# Devices are local equipment: retrying often is cheap, and a machine that
# comes back should be read again within seconds (OPC UA target: 5 s).
# Protocols that share a bus protect it themselves (Modbus unit backoff).
RECONNECT_FIRST = 0.5
RECONNECT_CAP = 4.0
# A push stream quiet this many periods (no data, no error) is restarted.
QUIET_PERIODS = 3
# ... but never sooner than this: a busy loop must not restart healthy streams.
QUIET_FLOOR = 3.0
# A read may take its period three times over plus this before it counts as
# hung (drivers time out their own requests well before; a shared bus queues).
READ_GRACE = CONNECT_TIMEOUT + 60.0

# What a device (or the way to it) does: the driver reports these as "down".
# Anything else escaping a driver is a bug in the driver.
_EXPECTED: tuple[type[BaseException], ...] = (DriverError, OSError, TimeoutError, EOFError)


def is_expected(err: BaseException) -> bool:
    """True for device and link failures; False for a driver's bugs (TypeError, ...)."""
    return isinstance(err, _EXPECTED) and not isinstance(err, Stalled)


class Stalled(DriverError):
    """The device made no progress (quiet stream, hung read): it is restarted."""


def _error_text(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if not is_expected(err) and not isinstance(err, Stalled):
        text = f"{type(err).__name__}: {text}"
    return text if len(text) <= 200 else text[:197] + "..."


class DeviceRunner:
    """Owns one device's driver instance and its loop."""

    def __init__(
        self,
        config: DeviceConfig,
        plugin: DriverPlugin,
        *,
        state_dir: Path,
        sink: Sink,
        shared: dict[str, Any] | None = None,
        links: SharedLinks | None = None,
        heartbeat: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.plugin = plugin
        self.counters = DeviceCounters()
        self.sink = sink
        #: Called on every sign of progress (tick, emit, error); kept for callers
        #: that watch the loop from outside.
        self.heartbeat = heartbeat
        self.log = logging.getLogger(f"agent.device.{config.name}")
        self.context = DriverContext(state_dir=state_dir, counters=self.counters, log=self.log,
                                     links=links if links is not None else SharedLinks(),
                                     shared=shared if shared is not None else {})
        self.driver: Driver = plugin.factory(config, self.context)
        self._backoff = Backoff(RECONNECT_FIRST, RECONNECT_CAP)
        self._retry_at = 0.0
        self._down_since: float | None = None
        self._tags = config.tag_names()
        self._last_activity = time.monotonic()
        #: Set by a restart: the next connect uses a fresh driver instance.
        self._replace_driver = False
        self._traced: set[str] = set()

    @property
    def quiet_limit(self) -> float:
        """Seconds a push stream may stay silent (no data, no error) before a restart."""
        return max(QUIET_FLOOR, QUIET_PERIODS * self.config.poll)

    def _progress(self) -> None:
        self._last_activity = time.monotonic()
        self.heartbeat()

    # -- state changes, logged once each -------------------------------
    def _went_down(self, err: BaseException, *, restart: bool = False) -> None:
        text = _error_text(err)
        restart = restart or not is_expected(err)
        self.counters.connected = False
        self.counters.errors += 1
        self.counters.last_error = text
        self._retry_at = time.monotonic() + self._backoff.next()
        if restart:
            self.counters.device_restarts += 1
            self._replace_driver = True
        first = self._down_since is None
        if first:
            self._down_since = time.monotonic()
        extra = {"device": self.config.name}
        if first and isinstance(err, Stalled):
            self.log.error("device %s restarted: %s", self.config.name, text, extra=extra)
        elif restart and (first or text not in self._traced):
            # Not the device but the driver (or the code around it): the
            # traceback is what a developer needs, once per distinct failure
            # (a driver that fails every poll must not flood the journal).
            traced = text not in self._traced
            if len(self._traced) >= 32:  # texts that vary (counters in them): stay bounded
                self._traced.clear()
            self._traced.add(text)
            self.log.error("device %s restarted: driver %s failed: %s", self.config.name,
                           self.config.driver, text, exc_info=err if traced else None, extra=extra)
        elif first:
            self.log.error("device %s down: %s", self.config.name, text, extra=extra)
        else:
            self.log.debug("device %s still down: %s", self.config.name, text)

    def _came_up(self) -> None:
        self.counters.connected = True
        self._backoff.reset()
        if self._down_since is not None:
            self.log.info("device %s up again after %.0f s", self.config.name,
                          time.monotonic() - self._down_since, extra={"device": self.config.name})
            self._down_since = None
        else:
            self.log.info("device %s up", self.config.name, extra={"device": self.config.name})

    def bad_sample(self) -> Sample:
        return Sample.all_bad(self._tags, self.counters.last_error or "not connected")

    def _emit_bad(self) -> None:
        self.sink(self.config.name, [self.bad_sample()])

    def crashed(self, err: BaseException) -> None:
        """The loop itself ended by ``err`` (the scheduler restarts it): count and say so."""
        self._went_down(err, restart=True)

    def restart_delay(self) -> float:
        return max(0.0, self._retry_at - time.monotonic())

    async def _connect(self) -> bool:
        if self._replace_driver:
            self._replace_driver = False
            try:
                self.driver = self.plugin.factory(self.config, self.context)
            except Exception as err:
                self._went_down(err)
                return False
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self.driver.connect()
        except Exception as err:
            self._went_down(err)
            await self._close()
            return False
        self.counters.reconnects += 1
        # A poll device is "up" only once a read succeeds: a peer that accepts
        # TCP and never answers must not flap down/up on every retry.
        if self.driver.push:
            self._came_up()
        return True

    async def _close(self) -> None:
        try:
            await self.driver.close()
        except Exception as err:
            self.log.debug("close of %s failed: %s", self.config.name, err)

    # -- loops ---------------------------------------------------------
    async def run(self) -> None:
        try:
            if self.driver.push:
                await self._run_push()
            else:
                await self._run_poll()
        finally:
            await asyncio.shield(self._close())

    async def _poll_once(self) -> bool:
        """One read; False when the link was lost (closed, to reconnect later)."""
        started = time.perf_counter()
        limit = QUIET_PERIODS * self.config.poll + READ_GRACE
        try:
            try:
                async with asyncio.timeout(limit):
                    sample = await self.driver.read()
            except TimeoutError as err:
                raise Stalled(f"a read did not return within {limit:g} s") from err
            if not isinstance(sample, Sample):
                raise TypeError(f"read() returned {type(sample).__name__}, not a Sample")
        except Exception as err:  # any failure: bad readings and a reconnect, never a dead task
            self._went_down(err)
            self._emit_bad()
            await self._close()
            return False
        if not self.counters.connected:
            self._came_up()
        latency = (time.perf_counter() - started) * 1000
        c = self.counters
        c.polls += 1
        c.observe_latency(latency)
        if len(sample.bad) < len(sample.values) or not sample.values:
            c.last_good_ms = sample.ts
        if sample.bad:
            c.errors += 1
        self.sink(self.config.name, [sample])
        return True

    async def _run_poll(self) -> None:
        period = self.config.poll
        next_tick = math.ceil(time.time() / period) * period
        connected = False
        while True:
            await asyncio.sleep(max(0.0, next_tick - time.time()))
            self._progress()
            if not connected and time.monotonic() >= self._retry_at:
                connected = await self._connect()
            if connected:
                connected = await self._poll_once()
            else:
                self._emit_bad()
            next_tick += period
            now = time.time()
            if now >= next_tick:
                missed = math.floor((now - next_tick) / period) + 1
                self.counters.overruns += missed
                next_tick += missed * period

    def _emit(self, samples: list[Sample]) -> None:
        # An empty list is a driver saying "still here" (a quiet subscription).
        self._progress()
        if samples:
            self.counters.polls += len(samples)
            self.counters.last_good_ms = samples[-1].ts
            self.sink(self.config.name, samples)

    async def _stream_watched(self) -> None:
        """Run the driver's stream until it ends, raises, or goes quiet too long."""
        self._progress()
        stream = asyncio.ensure_future(self.driver.stream(self._emit))
        try:
            while True:
                limit = self.quiet_limit
                done, _ = await asyncio.wait({stream}, timeout=limit / 4)
                if done:
                    stream.result()
                    raise ConnectionError("stream ended")
                quiet = time.monotonic() - self._last_activity
                if quiet > limit:
                    raise Stalled(f"no data and no error for {quiet:.1f} s "
                                  f"({QUIET_PERIODS} periods of {self.config.poll:g} s)")
        finally:
            if not stream.done():
                stream.cancel()
                await asyncio.gather(stream, return_exceptions=True)

    async def _run_push(self) -> None:
        while True:
            self._progress()
            if await self._connect():
                try:
                    await self._stream_watched()
                except Exception as err:
                    self._went_down(err)
                    await self._close()
            self._emit_bad()
            while (left := self._retry_at - time.monotonic()) > 0:
                self._progress()
                await asyncio.sleep(min(left, 1.0))

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        """An on-demand read through the running driver (remote ``read``)."""
        return await self.driver.read(tags)
