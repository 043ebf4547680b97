"""Group commit: readings are committed as soon as possible, at most ten commits a second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from agent.pipeline.buffer import MIN_COMMIT_GAP, Buffer
from agent.sdk.readings import Sample


def make_buffer(path: Path, commit_interval: float) -> Buffer:
    return Buffer(path, max_size=64 * 1024**2, max_age=86400.0, max_message=128 * 1024,
                  commit_interval=commit_interval)


def sample(n: int) -> list[Sample]:
    return [Sample(ts=1_700_000_000_000 + n, values={"n": n})]


async def test_a_reading_does_not_wait_for_the_commit_interval(tmp_path: Path) -> None:
    # With a 60 s interval, a commit per interval would keep the reading in
    # memory for up to a minute; group commit stores it at once.
    buf = make_buffer(tmp_path / "b.sqlite", commit_interval=60.0)
    await buf.open()
    runner = asyncio.create_task(buf.run())
    try:
        buf.add("a", sample(1))
        await asyncio.wait_for(buf.committed.wait(), 20)
        assert [b.seq for b in await buf.fetch(0, 10)] == [1]
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await buf.close()


async def test_commits_are_grouped_at_most_ten_a_second(tmp_path: Path) -> None:
    buf = make_buffer(tmp_path / "b.sqlite", commit_interval=1.0)
    await buf.open()
    runner = asyncio.create_task(buf.run())
    added = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < 2.0:
            added += 1
            buf.add("a", sample(added))
            await asyncio.sleep(0.005)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    elapsed = time.monotonic() - started
    stored = await buf.fetch(0, 100_000)
    await buf.close()
    # Every reading is stored (the last commit on the way out included) ...
    assert sum(b.samples_json.count(b'"n"') for b in stored) == added
    # ... in far fewer commits than readings: one batch per commit here.
    assert len(stored) <= elapsed / MIN_COMMIT_GAP + 2
    assert len(stored) < added / 5


async def test_live_batches_from_memory_equal_the_stored_ones(tmp_path: Path) -> None:
    buf = make_buffer(tmp_path / "b.sqlite", commit_interval=1.0)
    await buf.open()
    for n in range(5):
        buf.add("a", sample(n))
        buf.add("b", sample(n))
        await buf.commit()
    live = await buf.fetch(4, 100)          # the live end: served from memory
    on_disk = await buf.fetch(4, 100, upto=10)  # a bounded fetch always reads the database
    assert [b.seq for b in live] == list(range(5, 11))
    assert [(b.seq, b.device, b.samples_json) for b in live] == [
        (b.seq, b.device, b.samples_json) for b in on_disk]
    await buf.close()
