"""Report by exception end to end: pymodbus server -> agent -> Mosquitto -> subscriber.

The test changes the server's registers and watches what reaches the broker.
Timing is never assumed: the agent's observer records every poll, and the
assertions compare what was sent with what was read.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agent.config.load import parse_site
from agent.pipeline.buffer import encode_sample
from agent.runtime.agent import Agent
from agent.sdk import Sample
from drivers.modbus.simserver import SimServer
from tests.conftest import Broker, Collector, async_wait_until
from tests.modbus.helpers_modbus import LAYOUT

POLL_MS = 200
BEAT_MS = 1000


def site(broker: Broker, port: int) -> str:
    conn = {"transport": "tcp", "host": "127.0.0.1", "port": port, "timeout": "500ms",
            "retries": 0}
    return yaml.safe_dump({
        "gateway": {"id": "gw-rbe", "site": "lab"},
        "uplink": {"mqtt": {"url": broker.url, "reconnect_max": "2s"}},
        "buffer": {"commit_interval": "100ms"},
        "devices": [
            {"name": "press", "driver": "modbus", "connection": conn, "poll": "200ms",
             "report": "change", "heartbeat": "1s",
             "tags": [
                 # The device's 1 s heartbeat would send the noise too (a heartbeat
                 # is the current reading): temp and mode only go on change.
                 {"name": "temp", "address": "HR0", "type": "float32", "deadband": 0.5,
                  "heartbeat": "5m"},
                 {"name": "mode", "address": "HR10", "type": "int16", "heartbeat": "5m"},
                 {"name": "level", "address": "HR20", "type": "int16"},
             ]},
            {"name": "plain", "driver": "modbus", "connection": conn, "poll": "200ms",
             "tags": [{"name": "temp", "address": "HR0", "type": "float32"},
                      {"name": "mode", "address": "HR10", "type": "int16"}]},
        ],
    })


class Run:
    """The agent under test, every raw poll it made, and every sample it sent."""

    def __init__(self, agent: Agent, col: Collector) -> None:
        self.agent = agent
        self.col = col
        self.polls: dict[str, list[Sample]] = {"press": [], "plain": []}
        agent.observers.append(lambda dev, samples: self.polls[dev].extend(samples))

    def sent(self, device: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for msg in self.col.json_payloads(f"/data/{device}"):
            out.extend(msg["samples"])
        return out

    async def polls_after(self, n: int, device: str = "press") -> None:
        start = len(self.polls[device])
        await async_wait_until(lambda: len(self.polls[device]) >= start + n, 30, f"{n} polls")

    async def flushed(self) -> None:
        """Everything stored so far has reached the subscriber."""
        await self.agent.buffer.commit()
        await async_wait_until(lambda: self.agent.buffer.stats.batches == 0, 30, "delivery")
        await asyncio.sleep(0.2)  # the subscriber's own socket


async def run_agent(broker: Broker, sim: SimServer, tmp_path: Path,
                    body: Callable[[Run], Any]) -> None:
    agent = Agent(parse_site(site(broker, sim.port), "site.yaml"), tmp_path / "state")
    async with Collector(broker, "m2m/lab/gw-rbe/data/#") as col:
        run = Run(agent, col)
        task = asyncio.create_task(agent.run())
        try:
            await body(run)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 30)


async def test_deadband_heartbeat_and_a_pulled_device(broker: Broker, tmp_path: Path) -> None:
    sim = await SimServer.tcp({1: LAYOUT})
    stopped = False

    async def body(run: Run) -> None:
        nonlocal stopped
        sim.set_value(1, "hr", 0, ">f", 20.0)
        sim.set_value(1, "hr", 10, ">h", 3)
        await async_wait_until(lambda: run.sent("press"), 30, "the first sample")
        assert run.sent("press")[0]["values"] == {"temp": 20.0, "mode": 3, "level": 0}
        # Noise inside the deadband, each value read at least twice.
        for noisy in (20.25, 19.75, 20.375, 19.625):
            sim.set_value(1, "hr", 0, ">f", noisy)
            await run.polls_after(2)
        # A drift past it, then a string of small steps that add up.
        sim.set_value(1, "hr", 0, ">f", 20.75)
        await run.polls_after(2)
        for step in (20.875, 21.0, 21.125, 21.25, 21.375):
            sim.set_value(1, "hr", 0, ">f", step)
            await run.polls_after(2)
        sim.set_value(1, "hr", 10, ">h", 4)
        await run.polls_after(8)  # some heartbeats
        await run.flushed()
        temps = [s["values"]["temp"] for s in run.sent("press") if "temp" in s["values"]]
        moved = [v for v in temps if v != 20.0]
        assert moved[:2] == [20.75, 21.25], temps
        assert not {20.25, 19.75, 20.375, 19.625} & set(temps)
        modes = [s["values"]["mode"] for s in run.sent("press") if "mode" in s["values"]]
        assert modes == [3, 4], "mode has a 5 min heartbeat: sent on change only"
        check_heartbeats(run, "level")

        # Pull the device: the next poll reports bad, never a heartbeat of the old value.
        polls_before = len(run.polls["press"])
        await sim.stop()
        stopped = True
        await async_wait_until(lambda: any(s.bad for s in run.polls["press"][polls_before:]),
                               30, "a failed poll")
        await run.polls_after(8)
        await run.flushed()
        down_at = next(s.ts for s in run.polls["press"][polls_before:] if s.bad)
        after = [s for s in run.sent("press") if s["ts"] >= down_at]
        assert after and after[0]["ts"] == down_at, "the outage is sent at once"
        assert all(set(s["values"].values()) == {None} for s in after), after
        assert all(s["bad"] for s in after)
        # Resent at the heartbeat only, or when the error text changed (the
        # first failure and the failed reconnects may say different things).
        levels = [(s["ts"], s["bad"]["level"]) for s in after if "level" in s["values"]]
        for (t0, e0), (t1, e1) in itertools.pairwise(levels):
            assert t1 - t0 >= BEAT_MS or e1 != e0, levels

    try:
        await run_agent(broker, sim, tmp_path, body)
    finally:
        if not stopped:
            await sim.stop()


def check_heartbeats(run: Run, tag: str) -> None:
    """Every send of ``tag`` came at the first poll on or after its heartbeat was due."""
    sent_ts = [s["ts"] for s in run.sent("press") if tag in s["values"]]
    polled = [s.ts for s in run.polls["press"]]
    assert len(sent_ts) >= 4
    for before, after in itertools.pairwise(sent_ts):
        due = before + BEAT_MS
        late = [t for t in polled if due <= t < after]
        assert not late, f"a poll at {late[0]} was due for a heartbeat after {before}"
        # Measured in poll ticks: the gap is at most the heartbeat plus one poll
        # unless the machine skipped ticks (then the next poll that happened).
        skipped = not [t for t in polled if due <= t <= due + POLL_MS]
        assert after - before <= BEAT_MS + POLL_MS or skipped


async def test_report_always_sends_every_poll_byte_for_byte(broker: Broker,
                                                            tmp_path: Path) -> None:
    sim = await SimServer.tcp({1: LAYOUT})

    async def body(run: Run) -> None:
        sim.set_value(1, "hr", 0, ">f", 1.5)
        await run.polls_after(5, "plain")
        await run.flushed()
        polls = {s.ts: encode_sample(s) for s in run.polls["plain"]}
        wire = [m for t, m, _ in run.col.messages if t.endswith("/data/plain")]
        assert wire
        for payload in wire:
            # The buffer's batch is embedded as is: find each sample's bytes in it.
            for obj in json.loads(payload)["samples"]:
                assert polls[obj["ts"]] in payload
        sent_ts = {s["ts"] for s in run.sent("plain")}
        stored_until = max(sent_ts)
        assert {ts for ts in polls if ts <= stored_until} == sent_ts, "every poll is sent"

    try:
        await run_agent(broker, sim, tmp_path, body)
    finally:
        await sim.stop()
