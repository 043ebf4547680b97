"""The state directory on a full filesystem (a 3 MB tmpfs): counters stay true, the
oldest batches make room, data flows again as soon as the uplink or the disk frees room.

By hand: ``EDGE_SOAK=long ./dev.sh test tests/soak/test_soak_full_disk.py -s`` (a 60 s
outage on a full disk); CI: 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from agent.config.load import parse_site
from agent.runtime.agent import Agent
from drivers.modbus.simulator import simulate
from tests.conftest import Broker, Collector, async_wait_until
from tests.core.diskfull import fill, tmpfs
from tests.soak.common import GATEWAY, LONG, delivered, presses, site_text

OUTAGE_S = 60.0 if LONG else 10.0


def truth(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0) FROM batches"
                         ).fetchone()
    return int(row[0]), int(row[1])


async def test_full_disk_counts_true_and_data_flows_when_room_returns(
        broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "agent")
    with tmpfs(tmp_path / "disk") as disk:
        state = disk / "state"
        async with contextlib.AsyncExitStack() as stack:
            devices = presses((await simulate(stack, tmp_path))[0], 4, "50ms")
            site = parse_site(site_text(broker.url, devices), "site.yaml")  # max_size 512MB
            agent = Agent(site, state)
            buf = agent.buffer
            run = asyncio.create_task(agent.run())
            try:
                async with Collector(broker, f"m2m/lab/{GATEWAY}/data/#") as col:
                    await async_wait_until(lambda: agent.uplink.counters.acked >= 10, 60, "data")
                    filler = fill(disk, leave=300 * 1024)
                    broker.stop()
                    await async_wait_until(lambda: buf.stats.dropped_batches > 0, 60,
                                           "the disk to fill and the oldest to make room")
                    # The rest of the disk goes too (another process writing its logs).
                    filler2 = fill(disk, leave=0, name="filler2")
                    t_end = time.monotonic() + OUTAGE_S
                    while time.monotonic() < t_end:
                        await asyncio.sleep(0.2)
                        assert buf.stats.batches >= 0 and buf.stats.bytes >= 0
                    boundary = await buf.max_seq()
                    assert boundary > 0
                    assert (buf.stats.batches, buf.stats.bytes) == truth(buf.path)
                    broker.start()
                    t_back = time.monotonic()
                    # As soon as the uplink is back, acks free room and new data flows.
                    await async_wait_until(lambda: any(s > boundary for s in delivered(col)), 30,
                                           "new data after the uplink returned")
                    after_uplink = time.monotonic() - t_back
                    await async_wait_until(lambda: buf.stats.batches <= 20, 60, "the backlog")
                    filler.unlink()
                    filler2.unlink()
                    t_room = time.monotonic()
                    now = await buf.max_seq()
                    await async_wait_until(lambda: any(s > now for s in delivered(col)), 30,
                                           "data flows after the disk has room again")
                    after_room = time.monotonic() - t_room
                    agent.stop()
                    await asyncio.wait_for(run, 30)
            finally:
                if not run.done():
                    agent.stop()
                    await asyncio.wait_for(run, 30)
        depth = truth(buf.path)
    assert (buf.stats.batches, buf.stats.bytes) == depth, "counters match the database"
    assert f"stopped; {depth[0]} batches kept" in caplog.text
    assert caplog.text.count("dropping the oldest batches") == 1, "one line per episode"
    assert "disk full at" in caplog.text
    assert buf.stats.dropped_batches > 0
    print(f"\nfull disk: {buf.stats.dropped_batches} oldest batches dropped to make room, "
          f"{buf.stats.write_errors} failed commits, depth {depth[0]} at the stop; new data "
          f"{after_uplink:.1f} s after the uplink returned, {after_room:.1f} s after the "
          f"filler went")
