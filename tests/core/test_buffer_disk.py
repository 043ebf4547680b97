"""The buffer on a real full disk (a 3 MB tmpfs) and within its directory bound."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from agent.pipeline import buffer_space
from agent.pipeline.buffer import Buffer
from agent.sdk.readings import Sample
from tests.core.diskfull import fill, tmpfs


def make_buffer(path: Path, max_size: int = 512 * 1024**2) -> Buffer:
    return Buffer(path, max_size=max_size, max_age=86400.0, max_message=128 * 1024,
                  commit_interval=0.1)


def wide(n: int, start: int) -> list[Sample]:
    """n samples of 20 tags (~500 bytes each), numbered from ``start``."""
    return [Sample(ts=1_700_000_000_000 + i, values={f"t{j}": i + j / 7 for j in range(20)})
            for i in range(start, start + n)]


def truth(path: Path) -> tuple[int, int]:
    """Depth and payload bytes as the database itself has them."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0) FROM batches"
                         ).fetchone()
    return int(row[0]), int(row[1])


def stored_ts(path: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT payload FROM batches ORDER BY seq").fetchall()
    return [s["ts"] for (p,) in rows for s in json.loads(p)]


async def test_full_disk_drops_the_oldest_counts_true_and_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "agent.buffer")
    with tmpfs(tmp_path / "disk") as disk:
        buf = make_buffer(disk / "state" / "buffer.sqlite")  # max_size far beyond the disk
        await buf.open()
        fill(disk, leave=1024**2)
        n = 0
        for _ in range(120):  # ~3 MB of readings into ~1 MB of room
            buf.add("a", wide(50, n))
            n += 50
            await buf.commit()
            # Counters stay true on every commit, whatever SQLite rolled back.
            assert (buf.stats.batches, buf.stats.bytes) == truth(buf.path)
            assert buf.stats.batches >= 0
        assert buf.stats.dropped_batches > 0, "the oldest batches made room"
        assert buf.stats.batches + buf.stats.dropped_batches == 120
        assert buf.stats.dropped_samples == buf.stats.dropped_batches * 50
        ts = stored_ts(buf.path)
        assert ts[-1] == 1_700_000_000_000 + n - 1, "the newest readings are stored"
        assert ts == sorted(ts) and len(ts) == ts[-1] - ts[0] + 1, "the oldest went first"
        assert caplog.text.count("disk full at") == 1, "one line per episode"
        assert "cannot write" not in caplog.text, "dropping made room: no write failed"

        # The rest of the disk goes too: freed pages inside the file still take new batches.
        fill(disk, leave=0, name="filler2")
        for _ in range(20):
            buf.add("a", wide(50, n))
            n += 50
            await buf.commit()
            assert (buf.stats.batches, buf.stats.bytes) == truth(buf.path)
        assert stored_ts(buf.path)[-1] == 1_700_000_000_000 + n - 1

        # The uplink returns: every ack is deleted on its own, at once.
        for b in await buf.fetch(0, 10_000):
            buf.ack(b.seq)
        await buf.commit()
        assert truth(buf.path) == (0, 0) and buf.stats.batches == 0
        buf.add("a", wide(5, n))
        assert await buf.commit() == 1, "data flows again as soon as there is room"
        await buf.close()


async def test_nothing_to_drop_holds_the_newest_in_memory_until_there_is_room(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "agent.buffer")
    with tmpfs(tmp_path / "disk") as disk:
        buf = make_buffer(disk / "state" / "buffer.sqlite")
        await buf.open()
        filler = fill(disk, leave=0)
        for i in range(5):
            buf.add("a", wide(50, i * 50))
            assert await buf.commit() == 0
            assert (buf.stats.batches, buf.stats.bytes) == truth(buf.path) == (0, 0)
        assert buf.stats.write_errors == 5
        assert caplog.text.count("cannot write") == 1, "one line per episode"
        filler.unlink()
        assert await buf.commit() == 5, "everything held is stored once there is room"
        assert stored_ts(buf.path) == [1_700_000_000_000 + i for i in range(250)]
        assert buf.stats.committed_samples == 250 and buf.stats.dropped_samples == 0
        assert "writes to" in caplog.text and "work again" in caplog.text
        await buf.close()


async def test_max_size_bounds_database_wal_and_index(tmp_path: Path) -> None:
    limit = 1024**2
    buf = make_buffer(tmp_path / "buffer.sqlite", max_size=limit)
    await buf.open()
    peak = 0
    for i in range(300):  # ~7 MB of readings through a 1 MB bound
        buf.add("a", wide(50, i * 50))
        await buf.commit()
        peak = max(peak, buffer_space.dir_bytes(buf.path))
        assert (buf.stats.batches, buf.stats.bytes) == truth(buf.path)
    assert peak <= limit, f"the buffer's files reached {peak} bytes, max_size is {limit}"
    # The bound is not met by keeping almost nothing: most of it holds batches.
    assert buf.stats.bytes > limit // 2
    assert buf.stats.batches + buf.stats.dropped_batches == 300
    # A lowered limit shrinks the files too (the freed pages go back to the disk).
    buf.max_size = 512 * 1024
    buf.add("a", wide(50, 300 * 50))
    await buf.commit()
    assert buffer_space.dir_bytes(buf.path) <= 512 * 1024
    await buf.close()
    assert buffer_space.dir_bytes(buf.path) <= 512 * 1024


async def test_a_file_from_before_keeps_its_size_and_never_grows(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "agent.buffer")
    path = tmp_path / "buffer.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:  # no auto_vacuum, as before
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT "
                   "NOT NULL, created_ms INTEGER NOT NULL, samples INTEGER NOT NULL, "
                   "payload BLOB NOT NULL)")
        db.executemany("INSERT INTO batches(device, created_ms, samples, payload) "
                       "VALUES ('a', 1700000000000, 1, ?)", [(b"[" + b"1" * 4000 + b"]",)] * 400)
        db.commit()
    before = path.stat().st_size
    buf = make_buffer(path, max_size=512 * 1024)
    await buf.open()
    for i in range(30):
        buf.add("a", wide(50, i * 50))
        await buf.commit()
        assert path.stat().st_size <= before
        assert (buf.stats.batches, buf.stats.bytes) == truth(path)
    assert buf.stats.dropped_batches > 0
    assert "shrunk" not in caplog.text
    await buf.close()


async def test_the_wal_share_is_claimed_on_disk_after_a_restart_too(tmp_path: Path) -> None:
    wal = tmp_path / "buffer.sqlite-wal"
    for _ in range(2):
        buf = make_buffer(tmp_path / "buffer.sqlite", max_size=1024**2)
        await buf.open()
        buf.add("a", wide(5, 0))
        await buf.commit()
        # 1 MB: an eighth (128 KB) is the WAL's, allocated up front.
        assert wal.stat().st_size == 128 * 1024
        assert wal.stat().st_blocks * 512 >= 128 * 1024, "allocated, not sparse"
        await buf.close()
