"""What remote management may ask of the agent, and nothing more.

Management (and the coming HTTP endpoint) hold an :class:`AgentControl`,
never the :class:`~agent.runtime.agent.Agent`: status, config apply, device
read and write, restart, log level, buffer stats, and the few uplink helpers
a command channel needs.  The Agent's parts (scheduler, uplink, buffer) can
change shape without management noticing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from agent.config.site import ConfigErrors, Site
from agent.pipeline.uplink import Handler
from agent.pipeline.writes import guarded_write
from agent.runtime.logs import set_level
from agent.runtime.reload import BeforeSwitch
from agent.runtime.status import CpuSampler, collect, snapshot
from agent.sdk.driver import DeviceConfig
from agent.sdk.readings import Sample

if TYPE_CHECKING:
    from paho.mqtt.properties import Properties

    from agent.runtime.agent import Agent

__all__ = ["AgentControl", "NoSuchDevice"]


class NoSuchDevice(LookupError):
    """The text names the devices there are."""


class AgentControl:
    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    # -- what runs ---------------------------------------------------------
    @property
    def site(self) -> Site:
        """The running config."""
        return self._agent.site

    @property
    def config_pending(self) -> bool:
        """The running config is on probation (not last-good yet)."""
        return self._agent.lifecycle.pending

    @property
    def last_good(self) -> Site | None:
        return self._agent.lifecycle.good

    @property
    def site_path(self) -> str | None:
        path = self._agent.store.site_path
        return None if path is None else str(path)

    def status(self, cpu: CpuSampler, **extra: Any) -> dict[str, Any]:
        """The ``status`` result: state, health, latest samples."""
        return snapshot(self._agent, cpu, config_pending=self.config_pending, **extra)

    def metrics(self, cpu: CpuSampler) -> dict[str, Any]:
        return collect(self._agent, cpu)

    def buffer_stats(self) -> dict[str, Any]:
        return self._agent.buffer.stats.snapshot()

    # -- config ------------------------------------------------------------
    async def apply(self, site: Site, before_switch: BeforeSwitch | None = None) -> dict[str, Any]:
        """Write ``site`` to the site file and run it (on probation); see agent.runtime.reload."""
        return await self._agent.lifecycle.apply(site, write_file=True,
                                                 before_switch=before_switch)

    async def refuse(self, err: ConfigErrors) -> list[str]:
        """A pushed config failed validation: ``state`` says so; the problem lines."""
        return await self._agent.lifecycle.refuse(err, "pushed config")

    # -- devices -----------------------------------------------------------
    def device(self, name: str) -> DeviceConfig:
        runner = self._agent.scheduler.runners.get(name)
        if runner is None:
            known = ", ".join(sorted(self._agent.scheduler.runners)) or "none"
            raise NoSuchDevice(f"no device {name!r}; devices: {known}")
        return runner.config

    async def read(self, device: str, tags: Sequence[str] | None = None) -> Sample:
        """An on-demand read through the running driver."""
        self.device(device)
        return await self._agent.scheduler.runners[device].read(tags)

    async def write(self, device: str, tag: str, value: Any, *, origin: str) -> Any:
        """The one guarded write path; returns the value read back."""
        self.device(device)
        driver = self._agent.scheduler.runners[device].driver
        return await guarded_write(driver, tag, value, origin=origin)

    # -- process -----------------------------------------------------------
    def restart(self) -> None:
        """Stop cleanly; systemd's Restart=always starts the agent again."""
        self._agent.stop()

    def set_log_level(self, level: str, logger: str | None = None) -> None:
        set_level(level, logger)

    # -- the uplink, for a command channel -----------------------------------
    def topic(self, suffix: str) -> str:
        return self._agent.uplink.topic(suffix)

    async def publish(self, topic: str, payload: str, *, qos: int = 0,
                      properties: Properties | None = None) -> bool:
        return await self._agent.uplink.publish(topic, payload, qos=qos, properties=properties)

    def subscribe(self, suffix: str, handler: Handler) -> None:
        """Handle messages on ``{base}/{suffix}``; call before the agent runs."""
        self._agent.uplink.subscribe(suffix, handler)

    def on_connect(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._agent.uplink.on_connect.append(callback)

    def on_reload(self, callback: Callable[[Site], Awaitable[None]]) -> None:
        """``callback(site)`` after every config change, before the state goes out."""
        self._agent.on_reload.insert(0, callback)

    def add_service(self, service: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A long-running job started and cancelled with the agent."""
        self._agent.services.append(lambda _agent: service())
