"""The whole agent against real peers: Modbus simulator, Mosquitto, kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from agent.config.load import parse_site
from agent.runtime.agent import Agent
from drivers.modbus.simulator import simulate
from tests.conftest import Broker, Collector, async_wait_until, fast

ROOT = Path(__file__).resolve().parents[2]


def site_text(url: str, devices: list[dict[str, Any]], **buffer: Any) -> str:
    return yaml.safe_dump({
        "gateway": {"id": "gw-e2e", "site": "lab"},
        "uplink": {"mqtt": {"url": url, "reconnect_max": "2s"}},
        "buffer": {"commit_interval": "200ms", **buffer},
        "devices": devices,
    })


def start_agent(site: Path, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli.main", "run", "-c", str(site), "--state-dir", str(state)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(state.parent / "agent.log", "ab"),
    )


def stored_seqs(state: Path) -> tuple[set[int], int]:
    with contextlib.closing(sqlite3.connect(state / "buffer.sqlite")) as db:
        left = {r[0] for r in db.execute("SELECT seq FROM batches")}
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
    return left, int(row[0]) if row else 0


def delivered(col: Collector) -> dict[int, dict[str, Any]]:
    return {int(p["seq"]): p for p in col.json_payloads() if "seq" in p}


async def test_kill_9_mid_stream_loses_nothing_committed(broker: Broker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with contextlib.AsyncExitStack() as stack:
        devices = fast(await simulate(stack, tmp_path))
        site = tmp_path / "site.yaml"
        site.write_text(site_text(broker.url, devices))
        async with Collector(broker, "m2m/lab/gw-e2e/#") as col:
            proc = start_agent(site, state)
            try:
                await async_wait_until(lambda: len(delivered(col)) >= 5, 60, "first batches")
                # Let the broker go away so a backlog is committed, then kill -9.
                broker.stop()
                await async_wait_until(lambda: len(stored_seqs(state)[0]) >= 5, 60, "backlog")
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                committed, last_before = stored_seqs(state)
                assert committed, "the killed agent left its backlog on disk"
                broker.start()
                proc = start_agent(site, state)
                await async_wait_until(lambda: set(delivered(col)) >= set(range(1, last_before + 1)),
                                       60, "every committed batch after the restart")
                await async_wait_until(lambda: max(delivered(col)) > last_before + 3, 60,
                                       "new batches after the restart")
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(15) == 0, "SIGTERM must stop the agent cleanly"
            finally:
                if proc.poll() is None:
                    proc.kill()
            left, last = stored_seqs(state)
            got = delivered(col)
            # Every seq ever stored was delivered or is still stored: no gap.
            assert set(got) | left == set(range(1, last + 1))
            # seq continued after the crash, never reused: the same seq has the same payload.
            for seq in range(last_before + 1, last + 1):
                if seq in got:
                    assert got[seq]["device"] in {d["name"] for d in devices}

            def last_state() -> str:
                states = [json.loads(p) for t, p, _ in col.messages if t.endswith("/state")]
                return str(states[-1]["status"]) if states else ""

            await async_wait_until(lambda: last_state() == "offline", 30,
                                   "a clean stop publishes offline")


async def test_dead_device_does_not_slow_the_other(broker: Broker, tmp_path: Path) -> None:
    # A TCP peer that accepts and never answers: every read times out.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)

    black_hole = await asyncio.start_server(silent, "127.0.0.1", 0)
    hole_port = black_hole.sockets[0].getsockname()[1]
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(black_hole.wait_closed)
        stack.callback(black_hole.close)
        devices = fast(await simulate(stack, tmp_path))[:1]
        dead = copy.deepcopy(devices[0])
        dead["name"] = "dead-1"
        dead["connection"] = {**dead["connection"], "port": hole_port, "timeout": "1s",
                              "retries": 0}
        site = parse_site(site_text(broker.url, [*devices, dead]), "site.yaml")
        agent = Agent(site, tmp_path / "state")
        run = asyncio.create_task(agent.run())
        try:
            await async_wait_until(lambda: "dead-1" in agent.scheduler.runners, 30, "start")
            good = agent.scheduler.runners[devices[0]["name"]]
            await async_wait_until(lambda: good.counters.polls >= 3, 30, "good device polls")
            polls0, t0 = good.counters.polls, time.monotonic()
            await async_wait_until(lambda: time.monotonic() - t0 >= 4, 30, "a window")
            rate = (good.counters.polls - polls0) / (time.monotonic() - t0)
            # 5 polls/s configured; allow for a noisy shared machine.
            assert rate >= 3.5, f"good device polled at {rate:.1f}/s"
            dead_sample = agent.latest["dead-1"]
            assert all(v is None for v in dead_sample.values.values())
            assert set(dead_sample.bad) == set(dead_sample.values)
            assert not agent.scheduler.runners["dead-1"].counters.connected or \
                agent.scheduler.runners["dead-1"].counters.errors > 0
        finally:
            agent.stop()
            await asyncio.wait_for(run, 30)
    assert os.path.exists(tmp_path / "state" / "buffer.sqlite")
