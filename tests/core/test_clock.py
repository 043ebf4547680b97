"""Clock quality: the unsynced flag and re-stamping the buffer, with a fake clock source.

This machine's clock is never touched: the source is injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from agent.config.load import parse_site
from agent.pipeline.buffer import Buffer, encode_sample
from agent.pipeline.processing.clock import UNSYNCED, AdjtimexClock, ClockMonitor
from agent.runtime.agent import Agent
from agent.sdk import Sample
from drivers.modbus.simserver import SimServer
from tests.conftest import async_wait_until, free_port

YEAR_MS = 365 * 86_400_000
TRUE_NOW = 1_790_000_000_000  # what the time really is when the test starts


class FakeClock:
    """A Pi after boot: the wall clock a year behind until ``sync()`` steps it."""

    def __init__(self) -> None:
        self.mono = 5_000  # ms since boot
        self.error = -YEAR_MS
        self.is_synced = False

    def synced(self) -> bool:
        return self.is_synced

    def wall_ms(self) -> int:
        return TRUE_NOW + self.mono + self.error

    def mono_ms(self) -> int:
        return self.mono

    def advance(self, ms: int) -> None:
        self.mono += ms

    def sync(self) -> None:
        self.error = 0
        self.is_synced = True


def stored(path: Path) -> list[dict[str, object]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT payload FROM batches ORDER BY seq").fetchall()
    return [obj for (payload,) in rows for obj in json.loads(payload)]


def test_samples_are_flagged_only_while_unsynced() -> None:
    clock = FakeClock()
    monitor = ClockMonitor(clock, check_every=1.0)
    flagged = monitor.mark([Sample(clock.wall_ms(), {"a": 1})])
    assert flagged[0].clock == UNSYNCED
    assert encode_sample(flagged[0]).endswith(b',"clock":"unsynced"}')
    clock.sync()
    clock.advance(500)  # the monitor asks the kernel at most once a second
    assert monitor.mark([Sample(clock.wall_ms(), {"a": 1})])[0].clock == UNSYNCED
    clock.advance(600)
    fresh = monitor.mark([Sample(clock.wall_ms(), {"a": 1})])[0]
    assert fresh.clock is None
    assert b"clock" not in encode_sample(fresh)


async def test_sync_restamps_the_buffer_from_the_monotonic_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    monitor = ClockMonitor(clock, check_every=1.0)
    buffer = Buffer(tmp_path / "b.sqlite", max_size=10**8, max_age=10 * 365 * 86400.0,
                    max_message=128 * 1024, commit_interval=1.0)
    monitor.on_sync.append(buffer.restamp)
    await buffer.open()
    try:
        # Left by an earlier run (before a reboot): cannot be corrected.
        old = Sample(TRUE_NOW - 2 * YEAR_MS, {"a": 0}, clock=UNSYNCED)
        buffer.add("dev", [old])
        truth: list[int] = []
        for i in range(6):
            clock.advance(1000)
            truth.append(TRUE_NOW + clock.mono)
            buffer.add("dev", monitor.mark([Sample(clock.wall_ms(), {"a": i})]))
            if i == 2:
                assert await buffer.commit() == 1  # some on disk, some still in memory
        # NTP steps the clock; the next batch through the stage notices.
        clock.sync()
        clock.advance(1000)
        live = monitor.mark([Sample(clock.wall_ms(), {"a": 99})])
        assert live[0].clock is None
        buffer.add("dev", live)

        def restamped() -> bool:
            return not monitor._tasks

        await async_wait_until(restamped, 10, "the re-stamp task")
        await buffer.commit()
        got = stored(tmp_path / "b.sqlite")
        assert [o["values"] for o in got] == [{"a": v} for v in (0, 0, 1, 2, 3, 4, 5, 99)]
        assert got[0]["clock"] == UNSYNCED and got[0]["ts"] == old.ts
        assert [o["ts"] for o in got[1:7]] == truth
        assert all("clock" not in o for o in got[1:])
        assert got[7]["ts"] == TRUE_NOW + clock.mono
        # What the uplink fetches next (the live end is served from memory) is
        # the re-stamped data too.
        fetched = [o for b in await buffer.fetch(0, 100) for o in json.loads(b.samples_json)]
        assert fetched == got
        assert buffer.stats.bytes == sum(
            len(p) for p in [r[0] for r in sqlite3.connect(tmp_path / "b.sqlite").execute(
                "SELECT payload FROM batches")])
    finally:
        await buffer.close()


async def test_two_steps_while_unsynced_are_each_undone(tmp_path: Path) -> None:
    # fake-hwclock restores a saved time, later NTP steps it again.
    clock = FakeClock()
    monitor = ClockMonitor(clock, check_every=1.0)
    fixes: list[int | None] = []

    async def restamp(fix: object) -> int:
        assert callable(fix)
        fixes.extend([fix(first), fix(second), fix(TRUE_NOW - 5 * YEAR_MS)])
        return 2

    monitor.on_sync.append(restamp)
    first = monitor.mark([Sample(clock.wall_ms(), {"a": 1})])[0].ts
    first_mono = clock.mono
    clock.error = -3_600_000  # stepped to an hour behind
    clock.advance(1000)
    second = monitor.mark([Sample(clock.wall_ms(), {"a": 1})])[0].ts
    second_mono = clock.mono
    clock.sync()
    clock.advance(2000)
    monitor.mark([Sample(clock.wall_ms(), {"a": 1})])
    await async_wait_until(lambda: fixes, 10, "the re-stamp")
    assert fixes == [TRUE_NOW + first_mono, TRUE_NOW + second_mono, None]


def test_the_kernel_clock_is_read_and_trusted_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_AGENT_CLOCK", raising=False)
    assert isinstance(AdjtimexClock().synced(), bool)
    monkeypatch.setenv("EDGE_AGENT_CLOCK", "trusted")
    assert AdjtimexClock().synced() is True


async def test_a_failed_restamp_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    monitor = ClockMonitor(clock)

    async def broken(fix: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monitor.on_sync.append(broken)
    monitor.mark([Sample(clock.wall_ms(), {"a": 1})])
    clock.sync()
    clock.advance(2000)
    monitor.mark([Sample(clock.wall_ms(), {"a": 1})])
    await async_wait_until(lambda: not monitor._tasks, 10, "the re-stamp task")
    await asyncio.sleep(0)
    assert "keep the flag" in caplog.text


class ShiftedClock:
    """This machine's clocks, a year early until ``sync()`` (the driver stamps real time)."""

    def __init__(self) -> None:
        self.shift = 0
        self.is_synced = False

    def synced(self) -> bool:
        return self.is_synced

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.shift

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def sync(self) -> None:
        self.shift = YEAR_MS
        self.is_synced = True


async def test_the_agent_flags_and_restamps_what_it_buffered(tmp_path: Path) -> None:
    # No broker: everything the agent reads stays in its buffer.
    sim = await SimServer.tcp({1: {"hr": [(0, 10)]}})
    site = parse_site(yaml.safe_dump({
        "gateway": {"id": "gw-clock", "site": "lab"},
        "uplink": {"mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}", "reconnect_max": "1s"}},
        "buffer": {"commit_interval": "100ms"},
        "devices": [{"name": "d", "driver": "modbus", "poll": "100ms",
                     "connection": {"transport": "tcp", "host": "127.0.0.1", "port": sim.port},
                     "tags": [{"name": "a", "address": "HR0"}]}],
    }), "site.yaml")
    clock = ShiftedClock()
    agent = Agent(site, tmp_path / "state", clock=clock)
    path = tmp_path / "state" / "buffer.sqlite"
    task = asyncio.create_task(agent.run())
    try:
        await async_wait_until(lambda: agent.buffer.stats.committed_samples >= 3, 30, "samples")
        before = {o["ts"]: o for o in stored(path)}
        assert before and all(o.get("clock") == UNSYNCED for o in before.values())
        clock.sync()

        def restamped() -> bool:
            # (Samples flagged between the sync and the monitor noticing it carry
            # this fake's old time, unlike on a real machine: not checked here.)
            # Wall and monotonic clocks are read a moment apart: +-a few ms.
            fixed = sorted(int(str(o["ts"])) - YEAR_MS for o in stored(path) if "clock" not in o)
            return all(any(abs(f - int(str(ts))) <= 5 for f in fixed) for ts in before)

        await async_wait_until(restamped, 30, "every flagged sample with its true time")
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
        await sim.stop()
