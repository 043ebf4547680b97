"""A stop during a drain is bounded, and the log names what held it up."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from agent.config.load import parse_site
from agent.pipeline.buffer import Buffer
from agent.runtime.agent import Agent
from tests.conftest import Broker, async_wait_until

# systemd's TimeoutStopSec in deploy/edge-agent.service is 30 s: stop well within it.
STOP_BOUND = 25.0


async def backlog(state: Path, n: int) -> None:
    buf = Buffer(state / "buffer.sqlite", max_size=512 * 1024**2, max_age=86400,
                 max_message=128 * 1024, commit_interval=1.0)
    await buf.open()
    await buf.close()
    payload = json.dumps([{"ts": 1, "values": {"x": 1.5}}]).encode()
    with sqlite3.connect(state / "buffer.sqlite") as db:
        db.executemany("INSERT INTO batches(device, created_ms, samples, payload) "
                       "VALUES (?,?,?,?)", (("dev", int(time.time() * 1000), 1, payload)
                                            for _ in range(n)))


async def test_stop_during_a_drain_to_a_frozen_broker_is_bounded(
        broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "agent")
    state = tmp_path / "state"
    await backlog(state, 20_000)
    site = parse_site(yaml.safe_dump({
        "gateway": {"id": "gw-stop", "site": "lab"},
        # keepalive 30 s: the client's own timeout on a PUBACK is 30 s too.
        "uplink": {"mqtt": {"url": broker.url, "keepalive": "30s"}},
        "buffer": {"commit_interval": "200ms"},
        "devices": [],
    }), "site.yaml")
    agent = Agent(site, state)
    run = asyncio.create_task(agent.run())
    assert broker.proc is not None
    try:
        await async_wait_until(lambda: agent.uplink.counters.acked >= 200, 60, "a drain")
        # The broker freezes mid-drain: every PUBACK (and the offline state's) never comes.
        broker.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        agent.stop()
        await asyncio.wait_for(asyncio.shield(run), 60)
        took = time.monotonic() - t0
    finally:
        broker.proc.send_signal(signal.SIGCONT)
        if not run.done():
            run.cancel()
    print(f"\nstop during a drain to a frozen broker: {took:.1f} s")
    assert took < STOP_BOUND, f"stop took {took:.1f} s"
    assert "stop: the offline state publish did not finish within 2 s" in caplog.text, \
        "the log names what held the stop up"
    assert "stopped;" in caplog.text
    assert "failed" not in caplog.text, "every task stopped cleanly"
