"""SIGHUP reload and the one probation policy, against a real Mosquitto and a Modbus simulator.

The agent runs in-process (so its counters can be read) with its real SIGHUP
handler: the test signals its own process, exactly what ``systemctl reload``
does to the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.config.load import load_site
from agent.config.store import LAST_GOOD, PENDING, ConfigStore, read_probation
from agent.runtime.agent import Agent
from agent.runtime.systemd import Notifier
from drivers.modbus.simulator import simulate
from tests.conftest import Broker, async_wait_until
from tests.core.test_run_systemd import NotifySocket


def site_obj(broker: Broker, devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"gateway": {"id": "gw-reload", "site": "lab"},
            "uplink": {"mqtt": {"url": broker.url, "reconnect_max": "1s"}},
            "buffer": {"commit_interval": "200ms"},
            "management": {"rollback_after": "5s"},
            "devices": devices}


@dataclass
class Running:
    agent: Agent
    site_path: Path
    state: Path
    notify: NotifySocket

    def write(self, obj: dict[str, Any] | str) -> None:
        self.site_path.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj))

    def sighup(self) -> None:
        os.kill(os.getpid(), signal.SIGHUP)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, obj: dict[str, Any]) -> AsyncIterator[Running]:
    site_path = tmp_path / "site.yaml"
    site_path.write_text(yaml.safe_dump(obj))
    state = tmp_path / "state"
    state.mkdir()
    notify = NotifySocket(tmp_path / "notify.sock")
    agent = Agent(load_site(site_path), state, notifier=Notifier(str(notify.path)),
                  store=ConfigStore(state, site_path))
    task = asyncio.create_task(agent.run(reload_on_sighup=True))
    try:
        await async_wait_until(lambda: notify.seen("READY=1") == 1 or task.done(), 60, "READY")
        await async_wait_until(lambda: agent.uplink.counters.connected or task.done(), 30,
                               "uplink up")
        assert not task.done(), "the agent stopped at start-up"
        yield Running(agent, site_path, state, notify)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


def presses(sim: dict[str, Any], n: int, poll: str = "200ms") -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        d = copy.deepcopy(sim)
        d["name"], d["poll"] = f"press-{i}", poll
        out.append(d)
    return out


async def test_sighup_with_an_invalid_file_changes_nothing_and_answers_systemd(
        broker: Broker, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sim = (await simulate(stack, tmp_path))[0]
        obj = site_obj(broker, presses(sim, 2))
        async with running(tmp_path, obj) as gw:
            agent = gw.agent
            await async_wait_until(lambda: all(r.counters.polls >= 3
                                               for r in agent.scheduler.runners.values()),
                                   30, "polling")
            before_hash, before_runners = agent.site.hash, agent.scheduler.runners
            # A broken file, and a valid YAML file with a bad value.
            for text in ("gateway: [\n", yaml.safe_dump({**obj, "buffer": {"max_age": "soon"}})):
                want = gw.notify.seen("READY=1") + 1
                gw.write(text)
                gw.sighup()
                await async_wait_until(lambda: gw.notify.seen("READY=1") == want, 30,  # noqa: B023
                                       "READY=1 after the refused reload")
                assert agent.site.hash == before_hash
                assert agent.scheduler.runners == before_runners, "no device may restart"
                error = agent.state("online").get("config_error", "")
                assert "reloaded site file rejected" in error and before_hash in error, error
            assert gw.notify.seen("RELOADING=1") == 2
            # A good file afterwards applies and clears the error.
            obj["devices"][0]["poll"] = "300ms"
            gw.write(obj)
            gw.sighup()
            await async_wait_until(lambda: agent.site.hash != before_hash, 30, "the reload")
            assert "config_error" not in agent.state("online")
            assert agent.scheduler.runners["press-1"] is before_runners["press-1"]


async def test_sighup_of_a_10000_tag_file_costs_the_other_devices_no_poll(
        broker: Broker, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sim = (await simulate(stack, tmp_path))[0]
        big = {"name": "big", "driver": "modbus", "poll": "1h",
               "connection": {"transport": "tcp", "host": "127.0.0.1", "port": 1},
               "tags": [{"name": f"t{i}", "address": f"HR{i}"} for i in range(10_000)]}
        obj = site_obj(broker, [*presses(sim, 3, poll="1s"), big])
        async with running(tmp_path, obj) as gw:
            agent = gw.agent
            others = {n: r for n, r in agent.scheduler.runners.items() if n != "big"}
            await async_wait_until(lambda: all(r.counters.polls >= 3 for r in others.values()),
                                   30, "polling")
            before = {n: (r.counters.overruns, r.counters.polls) for n, r in others.items()}
            old_hash = agent.site.hash
            obj["devices"][-1]["poll"] = "30m"
            gw.write(obj)
            t0 = time.monotonic()
            gw.sighup()
            await async_wait_until(lambda: agent.site.hash != old_hash, 60, "the big reload")
            took = time.monotonic() - t0
            # Two more periods after the switch, then compare.
            polls_now = {n: r.counters.polls for n, r in others.items()}
            await async_wait_until(lambda: all(r.counters.polls >= polls_now[n] + 2
                                               for n, r in others.items()), 30, "more polls")
            assert agent.scheduler.runners["big"].config.poll == 1800
            for name, runner in others.items():
                overruns, polls = before[name]
                assert agent.scheduler.runners[name] is runner, f"{name} was restarted"
                assert runner.counters.overruns == overruns, (
                    f"{name} missed a poll during a {took:.1f} s reload")
                assert runner.counters.polls > polls


async def test_a_config_is_last_good_only_after_its_probation_at_start_and_on_sighup(
        broker: Broker, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sim = (await simulate(stack, tmp_path))[0]
        obj = site_obj(broker, presses(sim, 1))
        t0 = time.monotonic()
        async with running(tmp_path, obj) as gw:
            agent, state = gw.agent, gw.state
            first = agent.site
            # Start: a first config is on probation, not last-good yet.
            await async_wait_until(lambda: read_probation(state) is not None, 30, "the marker")
            assert agent.lifecycle.pending
            assert not (state / LAST_GOOD).exists()
            assert (state / PENDING).read_text() == first.text
            await async_wait_until(lambda: not agent.lifecycle.pending, 30, "the promotion")
            assert time.monotonic() - t0 >= 5, "promoted before its 5 s probation"
            assert (state / LAST_GOOD).read_text() == first.text
            assert read_probation(state) is None and not (state / PENDING).exists()
            assert not agent.lifecycle.pending
            # SIGHUP: the same policy.
            obj["devices"][0]["poll"] = "300ms"
            gw.write(obj)
            t1 = time.monotonic()
            gw.sighup()
            await async_wait_until(lambda: agent.site.hash != first.hash
                                   and agent.lifecycle.pending, 30, "the reload, on probation")
            second = agent.site
            marker = read_probation(state)
            assert marker is not None and marker["hash"] == second.hash
            assert (state / LAST_GOOD).read_text() == first.text, "promoted on arrival"
            await async_wait_until(lambda: not agent.lifecycle.pending, 30, "the second promotion")
            assert (state / LAST_GOOD).read_text() == second.text
            assert time.monotonic() - t1 >= 5, "promoted before its 5 s probation"
            assert read_probation(state) is None
