"""The running agent: wires config, scheduler, buffer and uplink together.

Start order: buffer (so nothing is lost), uplink, devices; then READY.
Stop order: devices, a last buffer commit, an ``offline`` state, disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config.plugins import DriverCatalog
from agent.config.site import Site
from agent.config.store import ConfigStore
from agent.pipeline.buffer import Buffer
from agent.pipeline.processing import Processing
from agent.pipeline.processing.clock import ClockMonitor, ClockSource
from agent.pipeline.scheduler import Scheduler
from agent.pipeline.sparkplug.context import NodeContext, TagCache
from agent.pipeline.uplink import Uplink
from agent.runtime.http import http_service
from agent.runtime.reload import ConfigLifecycle
from agent.runtime.shutdown import STEP_TIMEOUTS, bounded, bounded_all
from agent.runtime.state_report import StateReport
from agent.runtime.systemd import Notifier, Watchdog
from agent.sdk.driver import Driver
from agent.sdk.readings import Sample, now_ms

__all__ = ["Agent"]

log = logging.getLogger("agent.app")


class Agent:
    """One running gateway.  ``run()`` until ``stop()``."""

    def __init__(self, site: Site, state_dir: Path, *, notifier: Notifier | None = None,
                 store: ConfigStore | None = None, clock: ClockSource | None = None) -> None:
        self.site = site
        self.state_dir = state_dir
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.started_monotonic = time.monotonic()
        self.notifier = notifier or Notifier.from_env()
        self.watchdog = Watchdog.from_env(self.notifier)
        self.latest: dict[str, Sample] = {}
        #: Extra consumers of every batch of samples (the demo's live view).
        self.observers: list[Callable[[str, list[Sample]], None]] = []
        #: ``config_error`` / ``rollback`` for the state message (one owner).
        self.report = StateReport()
        self._stop = asyncio.Event()
        cfg = site.config
        self.buffer = Buffer(
            state_dir / "buffer.sqlite",
            max_size=cfg.buffer.max_size,
            max_age=cfg.buffer.max_age,
            max_message=cfg.uplink.mqtt.max_message,
            commit_interval=cfg.buffer.commit_interval,
        )
        self.uplink = Uplink(mqtt=cfg.uplink.mqtt, gateway=cfg.gateway, buffer=self.buffer,
                             state=self.state)
        # The watchdog watches the loop and the core tasks; devices are
        # supervised by the scheduler (a stuck device is restarted alone).
        self.uplink.heartbeat = self.watchdog.heartbeat("uplink", 120.0)
        self.buffer.heartbeat = self.watchdog.heartbeat(
            "buffer", 3 * cfg.buffer.commit_interval + 60.0)
        self.tag_cache = TagCache()
        self.tag_cache.enabled = cfg.uplink.mqtt.format == "sparkplug_b"
        self.observers.append(self.tag_cache.observe)
        self.uplink.node_context = NodeContext(
            state_dir=state_dir, devices=lambda: self.site.devices, latest=self.tag_cache.get,
            device_up=self._device_up, driver=self._driver, restart=self.stop)
        self.processing = Processing()
        self.clock = ClockMonitor(clock)
        self.clock.on_sync.append(self.buffer.restamp)
        # Only the drivers the site uses are imported (validation already
        # refused devices whose driver failed to load).
        self.drivers = DriverCatalog(dict(site.drivers))
        self.scheduler = Scheduler(plugins=self.drivers, state_dir=state_dir,
                                   sink=self._sink)
        #: The config files (site, last-good, probation) and their one policy.
        self.store = store or ConfigStore(state_dir)
        self.lifecycle = ConfigLifecycle(self, self.store)
        self._reloads: set[asyncio.Task[None]] = set()
        #: Extra long-running jobs (management) started with the agent.
        # The local HTTP endpoint idles (its server not even imported) without `http:`.
        self.services: list[Callable[[Agent], Coroutine[Any, Any, None]]] = [http_service]
        #: Called with the new site after a successful reload/apply.
        self.on_reload: list[Callable[[Site], Awaitable[None]]] = []

    # -- views ---------------------------------------------------------
    def state(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "version": __version__,
            "started_at": self.started_at,
            "config_hash": self.site.hash,
            **self.report.as_dict(),
        }

    def uptime(self) -> float:
        return time.monotonic() - self.started_monotonic

    def summary(self) -> str:
        """One line for systemd STATUS= and the demo."""
        runners = self.scheduler.runners.values()
        up = sum(1 for r in runners if r.counters.connected)
        link = "up" if self.uplink.counters.connected else "down"
        return (f"devices {up}/{len(runners)} up, uplink {link}, "
                f"buffer {self.buffer.stats.batches} batches")

    def _device_up(self, name: str) -> bool:
        # Unknown (not read yet) counts as up: only a failure makes a DDEATH.
        runner = self.scheduler.runners.get(name)
        return runner is not None and (runner.counters.connected or runner.counters.last_error is None)

    def _driver(self, name: str) -> Driver | None:
        runner = self.scheduler.runners.get(name)
        return runner.driver if runner is not None else None

    def _sink(self, device: str, samples: list[Sample]) -> None:
        # The status view and observers see every reading; the buffer what
        # the processing stage decided to send.
        self.buffer.add(device, self.clock.mark(self.processing(device, samples)))
        if samples:
            self.latest[device] = samples[-1]
            for observe in self.observers:
                observe(device, samples)

    # -- control -------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    async def apply_site(self, site: Site) -> dict[str, list[str]]:
        """Switch to a validated site live, atomically.

        Only devices whose options changed restart; the buffer is never
        recreated (its limits change in place); a changed broker, credential
        or topic setting makes the uplink reconnect with the new settings.
        ``self.site`` switches only after the scheduler accepted the devices:
        on a raise nothing changed.  Called by :class:`ConfigLifecycle`.
        """
        old = self.site
        cfg = site.config
        self.drivers.learn(dict(site.drivers))
        self.processing.apply(site.devices)
        self.tag_cache.enabled = cfg.uplink.mqtt.format == "sparkplug_b"
        try:
            changes = await self.scheduler.apply(site.devices)
        except BaseException:
            self.processing.apply(old.devices)
            raise
        self.site = site
        self.report.clear()
        self.buffer.max_size = cfg.buffer.max_size
        self.buffer.max_age = cfg.buffer.max_age
        self.buffer.commit_interval = cfg.buffer.commit_interval
        self.buffer.set_max_message(cfg.uplink.mqtt.max_message)
        if (old.config.uplink, old.config.gateway) != (cfg.uplink, cfg.gateway):
            self.uplink.reconfigure(cfg.uplink.mqtt, cfg.gateway)
            changes["uplink"] = ["reconnecting"]
        for hook in self.on_reload:
            await hook(site)
        await self.uplink.publish_state()
        summary = "; ".join(f"{k} {', '.join(v)}" for k, v in changes.items() if v)
        log.info("config %s applied: %s", site.hash, summary or "no device changed")
        return changes

    async def run(self, *, reload_on_sighup: bool = False) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        if reload_on_sighup:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGHUP, self._reload_soon)

        await self.buffer.open()
        tasks: list[asyncio.Task[None]] = []
        try:
            tasks.append(asyncio.create_task(self.buffer.run(), name="buffer"))
            tasks.append(asyncio.create_task(self.uplink.run(), name="uplink"))
            tasks.append(asyncio.create_task(self.watchdog.run(), name="watchdog"))
            tasks.append(asyncio.create_task(self._status_loop(), name="status"))
            tasks.append(asyncio.create_task(self._processing_tick(), name="processing"))
            tasks.extend(asyncio.create_task(svc(self), name=f"service:{i}")
                         for i, svc in enumerate(self.services))
            self.processing.apply(self.site.devices)
            await self.scheduler.apply(self.site.devices)
            tasks.append(asyncio.create_task(self.lifecycle.run(), name="config-lifecycle"))
            log.info("edge-agent %s started: gateway %s, %d devices, config %s", __version__,
                     self.site.config.gateway.id, len(self.site.devices), self.site.hash)
            self.notifier.ready()
            self.notifier.status(self.summary())
            stop_wait = asyncio.create_task(self._stop.wait())
            pending: set[asyncio.Task[Any]] = {stop_wait, *tasks}
            while not stop_wait.done():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = [t for t in done if t is not stop_wait and
                          (t.cancelled() or t.exception() is not None)]
                for task in failed:
                    # A core task died: a bug. Stop cleanly and let systemd restart us.
                    log.error("task %s failed: %r", task.get_name(),
                              None if task.cancelled() else task.exception())
                if failed:
                    break
            stop_wait.cancel()
        finally:
            log.info("stopping")
            self.notifier.stopping()
            for reload in self._reloads:
                reload.cancel()
            # Every step bounded, and named in the log when it runs over (shutdown.py).
            await bounded_all({f"device {name}": self.scheduler.stop(name)
                               for name in list(self.scheduler.runners)}, STEP_TIMEOUTS["devices"])
            await bounded("the offline state publish", self.uplink.publish(
                self.uplink.topic("state"), json.dumps(self.state("offline")), retain=True),
                STEP_TIMEOUTS["offline"])
            for task in tasks:
                task.cancel()
            await bounded_all({f"task {t.get_name()}": t for t in tasks}, STEP_TIMEOUTS["tasks"])
            await bounded("the buffer's last commit", self.buffer.close(), STEP_TIMEOUTS["buffer"])
            log.info("stopped; %d batches kept in the buffer", self.buffer.stats.batches)

    def _reload_soon(self) -> None:
        # Keep a reference: a task only the loop knows may be collected mid-flight.
        task = asyncio.get_running_loop().create_task(self.lifecycle.reload_file(),
                                                      name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _processing_tick(self) -> None:
        # Windows of a quiet push device end by the clock, not by a sample.
        while True:
            await asyncio.sleep(1.0)
            for device, samples in self.processing.tick(now_ms()).items():
                self.buffer.add(device, samples)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(10)
            self.notifier.status(self.summary())
