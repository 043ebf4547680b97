"""An in-process agent with ``http:`` on a free port, a real Mosquitto, a Modbus
simulator and a dead device (a port nobody listens on); an HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.load import Site, parse_site
from agent.runtime.agent import Agent
from drivers.modbus.simulator import simulate
from tests.conftest import Broker, async_wait_until, fast, free_port


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _get(url: str, headers: dict[str, str], method: str) -> Reply:
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(url, headers=headers, method=method)  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 - checked above
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                         resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


async def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Reply:
    """An HTTP request from a thread, so the agent on this loop keeps running."""
    return await asyncio.to_thread(_get, url, headers or {}, method)


def site_text(broker_url: str, devices: list[dict[str, Any]],
              http: dict[str, Any] | None) -> str:
    doc: dict[str, Any] = {
        "gateway": {"id": "gw-http", "site": "lab"},
        "uplink": {"mqtt": {"url": broker_url, "reconnect_max": "1s"}},
        "buffer": {"commit_interval": "100ms"},
        "devices": devices,
    }
    if http is not None:
        doc["http"] = http
    return yaml.safe_dump(doc)


@dataclass
class Running:
    agent: Agent
    base: str  # http://127.0.0.1:PORT
    devices: list[dict[str, Any]]
    broker: Broker

    def site(self, http: dict[str, Any] | None) -> Site:
        return parse_site(site_text(self.broker.url, self.devices, http), "site.yaml")


def dead_device(live: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``live`` pointing at a port nothing listens on."""
    dead = copy.deepcopy(live)
    dead["name"] = "dead-1"
    dead["connection"] = {**dead["connection"], "port": free_port(), "timeout": "500ms",
                          "retries": 0}
    return dead


@contextlib.asynccontextmanager
async def running_agent(broker: Broker, tmp_path: Path,
                        http: dict[str, Any] | None = None) -> AsyncIterator[Running]:
    port = free_port()
    http = {"listen": f"127.0.0.1:{port}", **(http or {})}
    async with contextlib.AsyncExitStack() as stack:
        live = fast(await simulate(stack, tmp_path))
        devices = [*live, dead_device(live[0])]
        site = parse_site(site_text(broker.url, devices, http), "site.yaml")
        agent = Agent(site, tmp_path / "state")
        task = asyncio.create_task(agent.run())
        try:
            await async_wait_until(lambda: agent.uplink.counters.connected, 60, "uplink up")
            yield Running(agent, f"http://{http['listen']}", devices, broker)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 60)


@pytest.fixture
async def running(broker: Broker, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_agent(broker, tmp_path) as r:
        runners = r.agent.scheduler.runners
        await async_wait_until(lambda: runners["sim-press"].counters.polls >= 3
                               and runners["dead-1"].counters.errors >= 1, 30,
                               "a live and a dead device")
        await async_wait_until(lambda: _answers(r.base), 60, "the http endpoint")
        yield r


async def _answers(base: str) -> bool:
    try:
        return (await get(base + "/api/status")).status == 200
    except OSError:
        return False
