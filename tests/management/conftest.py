"""An in-process agent with management attached, a real Mosquitto and a Modbus simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli.remote.client import BrokerOptions, RemoteClient
from agent.config.load import parse_site
from agent.config.store import save_last_good
from agent.management import attach_management
from agent.management.service import Management
from agent.runtime.agent import Agent
from drivers.modbus.simulator import simulate
from tests.conftest import Broker, async_wait_until, fast

SITE = "lab"
GATEWAY = "gw-1"
BASE = f"m2m/{SITE}/{GATEWAY}"


def site_dict(url: str, devices: list[dict[str, Any]], *, gateway: str = GATEWAY,
              management: dict[str, Any] | None = None, **mqtt: Any) -> dict[str, Any]:
    return {
        "gateway": {"id": gateway, "site": SITE},
        "uplink": {"mqtt": {"url": url, "reconnect_max": "1s", **mqtt}},
        "buffer": {"commit_interval": "100ms"},
        # The shortest probation: tests see promotions and rollbacks in seconds.
        "management": {"metrics_interval": "1s", "rollback_after": "5s", **(management or {})},
        "devices": devices,
    }


@dataclass
class Running:
    agent: Agent
    mgmt: Management
    task: asyncio.Task[None]
    devices: list[dict[str, Any]]
    site_path: Path
    broker: Broker
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self, key: bytes | None = None, gateway: str = GATEWAY) -> RemoteClient:
        return RemoteClient(BrokerOptions(url=self.broker.url), site=SITE, gateway=gateway,
                            key=key)

    def site_text(self, devices: list[dict[str, Any]] | None = None, **kw: Any) -> str:
        return yaml.safe_dump(site_dict(self.broker.url, self.devices if devices is None
                                        else devices, **kw))


@contextlib.asynccontextmanager
async def running_agent(broker: Broker, tmp_path: Path, *,
                        devices: list[dict[str, Any]] | None = None,
                        management: dict[str, Any] | None = None,
                        n_sims: int = 1, gateway: str = GATEWAY,
                        mqtt: dict[str, Any] | None = None) -> AsyncIterator[Running]:
    async with contextlib.AsyncExitStack() as stack:
        if devices is None:
            devices = []
            for i in range(n_sims):
                sims = fast(await simulate(stack, tmp_path))
                for d in sims:
                    d["name"] = f"{d['name']}-{i}" if n_sims > 1 else d["name"]
                devices.extend(sims)
        text = yaml.safe_dump(site_dict(broker.url, devices, management=management,
                                        gateway=gateway, **(mqtt or {})))
        site_path = tmp_path / f"{gateway}.yaml"
        site_path.write_text(text)
        state = tmp_path / f"state-{gateway}"
        state.mkdir(exist_ok=True)
        site = parse_site(text, str(site_path))
        save_last_good(state, site.text)  # a gateway that ran this config healthy before
        agent = Agent(site, state)
        mgmt = attach_management(agent, config_path=site_path)
        task = asyncio.create_task(agent.run())
        try:
            await async_wait_until(lambda: agent.uplink.connected.is_set() or task.done(), 30,
                                   "uplink up")
            assert not task.done(), "the agent stopped at start-up"
            yield Running(agent, mgmt, task, devices, site_path, broker)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 30)


@pytest.fixture
async def gateway(broker: Broker, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_agent(broker, tmp_path) as running:
        yield running


def payloads(messages: list[tuple[str, bytes, bool]], suffix: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in messages if t.endswith(suffix) and p]
