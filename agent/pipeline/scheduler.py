"""The scheduler: one supervised task per device, and live config changes.

Each device runs in its own task (:class:`~agent.pipeline.device.DeviceRunner`),
so a dead device never delays another; drivers that share a bus queue on it
themselves.  The scheduler supervises those tasks: one that ends by an
exception (a driver bug escaping its loop, a malformed sample, a raising
sink) is logged once with its traceback, counted in ``device_restarts`` and
started again after a backoff, while every other device keeps its rate.
A device that stops making progress is restarted by its runner.  So the
systemd watchdog no longer watches devices; it fires only when the event
loop itself (or the uplink, or the buffer) is stuck.

``apply`` is atomic: every new driver instance is built before anything is
stopped, so a config whose driver refuses to construct changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.pipeline.device import CONNECT_TIMEOUT, DeviceRunner, Sink, is_expected
from agent.sdk.driver import DeviceConfig, DriverPlugin
from agent.sdk.links import SharedLinks

__all__ = ["CONNECT_TIMEOUT", "DeviceRunner", "Scheduler", "Sink"]

log = logging.getLogger("agent.scheduler")


@dataclass
class _Running:
    runner: DeviceRunner
    task: asyncio.Task[None]


class Scheduler:
    """Starts, supervises, stops and restarts device runners; knows nothing of MQTT."""

    def __init__(
        self,
        *,
        plugins: Mapping[str, DriverPlugin],
        state_dir: Path,
        sink: Sink,
    ) -> None:
        self.plugins = plugins
        self.state_dir = state_dir
        self.sink = sink
        # Per driver: one registry of shared links, one legacy dict; both
        # outlive device restarts and config changes.
        self._links: dict[str, SharedLinks] = {}
        self._shared: dict[str, dict[str, Any]] = {}
        self._running: dict[str, _Running] = {}

    @property
    def runners(self) -> dict[str, DeviceRunner]:
        return {name: r.runner for name, r in self._running.items()}

    def _make(self, config: DeviceConfig) -> DeviceRunner:
        plugin = self.plugins.get(config.driver)
        if plugin is None:
            raise ValueError(f"device {config.name}: driver {config.driver!r} is not loaded")
        return DeviceRunner(
            config,
            plugin,
            state_dir=self.state_dir,
            links=self._links.setdefault(config.driver, SharedLinks()),
            shared=self._shared.setdefault(config.driver, {}),
            sink=self.sink,
        )

    def _launch(self, runner: DeviceRunner) -> None:
        name = runner.config.name
        task = asyncio.create_task(self._supervise(runner), name=f"device:{name}")
        self._running[name] = _Running(runner, task)

    def start(self, config: DeviceConfig) -> None:
        self._launch(self._make(config))

    async def _supervise(self, runner: DeviceRunner) -> None:
        """Run the device until cancelled; a loop that dies is counted and started again."""
        while True:
            try:
                await runner.run()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                runner.crashed(err)
                if is_expected(err):
                    log.debug("device %s loop ended by %r", runner.config.name, err)
            else:
                runner.crashed(RuntimeError("the device loop returned"))
            # The outage stays visible: bad samples every period until the restart.
            while (left := runner.restart_delay()) > 0:
                try:
                    runner.sink(runner.config.name, [runner.bad_sample()])
                except Exception:
                    log.debug("sink refused the bad sample of %s", runner.config.name,
                              exc_info=True)
                await asyncio.sleep(min(left, runner.config.poll))

    async def stop(self, name: str) -> None:
        running = self._running.pop(name, None)
        if running is None:
            return
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)

    async def apply(self, devices: Sequence[DeviceConfig]) -> dict[str, list[str]]:
        """Make the running set match ``devices``; unchanged devices keep running.

        Raises (with nothing changed) when a driver cannot build a new device.
        """
        wanted = {d.name: d for d in devices}
        stopped = [n for n in self._running if n not in wanted]
        restarted = [n for n, d in wanted.items()
                     if n in self._running and self._running[n].runner.config != d]
        started = [n for n in wanted if n not in self._running]
        # Build first: a factory that raises must leave the running set alone.
        fresh = {name: self._make(wanted[name]) for name in (*restarted, *started)}
        for name in (*stopped, *restarted):
            await self.stop(name)
        for runner in fresh.values():
            self._launch(runner)
        return {"started": started, "restarted": restarted, "stopped": stopped}

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(n) for n in list(self._running)))
