"""One task per device: poll on a wall-clock grid, or run a push stream.

- A poll loop ticks at multiples of its period (``12:00:01.000``,
  ``12:00:02.000``, ...): no drift, and devices with equal periods sample
  together.  A read that overruns its tick skips the missed ticks and counts
  them; it never stacks reads.
- A dead device never delays another: each has its own task, and drivers
  that share a bus queue on it themselves.
- While a device is down every tick still yields a sample, with every tag
  bad and the error, so the cloud sees the outage instead of silence.
  Reconnects follow the capped, jittered backoff.
- Logs once per outage: error when it starts, debug while it lasts, info
  when the device is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sdk.backoff import Backoff
from agent.sdk.counters import DeviceCounters
from agent.sdk.driver import DeviceConfig, Driver, DriverContext, DriverPlugin
from agent.sdk.readings import Sample

__all__ = ["DeviceRunner", "Scheduler", "Sink"]

log = logging.getLogger("agent.scheduler")

Sink = Callable[[str, list[Sample]], None]
HeartbeatFactory = Callable[[str, float], Callable[[], None]]

# A connect that takes longer than this is treated as failed.
CONNECT_TIMEOUT = 30.0
# Devices are local equipment: retrying often is cheap, and a machine that
# comes back should be read again within seconds (OPC UA target: 5 s).
# Protocols that share a bus protect it themselves (Modbus unit backoff).
RECONNECT_FIRST = 0.5
RECONNECT_CAP = 4.0


def _error_text(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class DeviceRunner:
    """Owns one device's driver instance and its loop."""

    def __init__(
        self,
        config: DeviceConfig,
        plugin: DriverPlugin,
        *,
        state_dir: Path,
        shared: dict[str, Any],
        sink: Sink,
        heartbeat: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.counters = DeviceCounters()
        self.sink = sink
        self.heartbeat = heartbeat
        self.log = logging.getLogger(f"agent.device.{config.name}")
        context = DriverContext(state_dir=state_dir, counters=self.counters, log=self.log,
                                shared=shared)
        self.driver: Driver = plugin.factory(config, context)
        self._backoff = Backoff(RECONNECT_FIRST, RECONNECT_CAP)
        self._retry_at = 0.0
        self._down_since: float | None = None
        self._tags = config.tag_names()

    # -- state changes, logged once each -------------------------------
    def _went_down(self, err: BaseException) -> None:
        text = _error_text(err)
        self.counters.connected = False
        self.counters.errors += 1
        self.counters.last_error = text
        self._retry_at = time.monotonic() + self._backoff.next()
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.log.error("device %s down: %s", self.config.name, text,
                           extra={"device": self.config.name})
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

    def _emit_bad(self) -> None:
        self.sink(self.config.name,
                  [Sample.all_bad(self._tags, self.counters.last_error or "not connected")])

    async def _connect(self) -> bool:
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
        try:
            sample = await self.driver.read()
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
            self.heartbeat()
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

    async def _run_push(self) -> None:
        def emit(samples: list[Sample]) -> None:
            self.heartbeat()
            if samples:
                self.counters.polls += len(samples)
                self.counters.last_good_ms = samples[-1].ts
            self.sink(self.config.name, samples)

        while True:
            self.heartbeat()
            if await self._connect():
                try:
                    await self.driver.stream(emit)
                    raise ConnectionError("stream ended")
                except Exception as err:
                    self._went_down(err)
                    await self._close()
            self._emit_bad()
            while (left := self._retry_at - time.monotonic()) > 0:
                self.heartbeat()
                await asyncio.sleep(min(left, 1.0))

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        """An on-demand read through the running driver (remote ``read``)."""
        return await self.driver.read(tags)


@dataclass
class _Running:
    runner: DeviceRunner
    task: asyncio.Task[None]


class Scheduler:
    """Starts, stops and restarts device runners; knows nothing of MQTT."""

    def __init__(
        self,
        *,
        plugins: dict[str, DriverPlugin],
        state_dir: Path,
        sink: Sink,
        heartbeat: HeartbeatFactory | None = None,
        unregister: Callable[[str], None] | None = None,
    ) -> None:
        self.plugins = plugins
        self._unregister = unregister
        self.state_dir = state_dir
        self.sink = sink
        self._heartbeat = heartbeat
        self._shared: dict[str, dict[str, Any]] = {}
        self._running: dict[str, _Running] = {}

    @property
    def runners(self) -> dict[str, DeviceRunner]:
        return {name: r.runner for name, r in self._running.items()}

    def start(self, config: DeviceConfig) -> None:
        runner = DeviceRunner(
            config,
            self.plugins[config.driver],
            state_dir=self.state_dir,
            shared=self._shared.setdefault(config.driver, {}),
            sink=self.sink,
        )
        if self._heartbeat is not None and not runner.driver.push:
            # A poll loop beats every tick; allow generous slack for slow reads.
            # Push streams are not watched: a quiet subscription is not a hang
            # (their drivers detect dead sessions with protocol keepalives).
            # Between two beats: a tick, plus at worst a connect attempt and a read.
            stale_after = 3 * config.poll + CONNECT_TIMEOUT + 60
            runner.heartbeat = self._heartbeat(f"device:{config.name}", stale_after)
        task = asyncio.create_task(runner.run(), name=f"device:{config.name}")
        task.add_done_callback(self._task_ended)
        self._running[config.name] = _Running(runner, task)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("device task %s died", task.get_name(), exc_info=task.exception())

    async def stop(self, name: str) -> None:
        running = self._running.pop(name, None)
        if running is None:
            return
        if self._unregister is not None:
            self._unregister(f"device:{name}")
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)

    async def apply(self, devices: Sequence[DeviceConfig]) -> dict[str, list[str]]:
        """Make the running set match ``devices``; unchanged devices keep running."""
        wanted = {d.name: d for d in devices}
        stopped = [n for n in self._running if n not in wanted]
        restarted = [n for n, d in wanted.items()
                     if n in self._running and self._running[n].runner.config != d]
        started = [n for n in wanted if n not in self._running]
        for name in (*stopped, *restarted):
            await self.stop(name)
        for name in (*restarted, *started):
            self.start(wanted[name])
        return {"started": started, "restarted": restarted, "stopped": stopped}

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(n) for n in list(self._running)))
