"""The durable buffer on its own: seq, limits, drop accounting, disk full."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from agent.pipeline import buffer_space
from agent.pipeline.buffer import Buffer
from agent.pipeline.encoders.json import pack_batches
from agent.sdk.readings import Sample


def make_buffer(path: Path, **kw: object) -> Buffer:
    args: dict[str, object] = {"max_size": 64 * 1024**2, "max_age": 86400.0,
                               "max_message": 128 * 1024, "commit_interval": 0.1}
    args.update(kw)
    return Buffer(path, **args)  # type: ignore[arg-type]


def samples(n: int, start: int = 0) -> list[Sample]:
    return [Sample(ts=1_700_000_000_000 + i, values={"t": float(i), "n": i})
            for i in range(start, start + n)]


async def test_seq_rises_by_one_and_is_never_reused_across_restarts(tmp_path: Path) -> None:
    buf = make_buffer(tmp_path / "b.sqlite")
    await buf.open()
    buf.add("a", samples(3))
    buf.add("b", samples(2))
    await buf.commit()
    first = await buf.fetch(0, 100)
    assert [b.seq for b in first] == [1, 2]
    for b in first:
        buf.ack(b.seq)
    await buf.commit()
    assert buf.stats.batches == 0
    await buf.close()

    buf = make_buffer(tmp_path / "b.sqlite")
    await buf.open()
    buf.add("a", samples(1))
    await buf.commit()
    again = await buf.fetch(0, 100)
    assert [b.seq for b in again] == [3]  # not 1: deleted seqs are never reused
    assert json.loads(again[0].samples_json)[0]["values"] == {"t": 0.0, "n": 0}
    await buf.close()


async def test_size_limit_drops_oldest_and_counts(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "agent.buffer")
    limit = 256 * 1024
    buf = make_buffer(tmp_path / "b.sqlite", max_size=limit)
    await buf.open()
    for i in range(200):
        buf.add("a", samples(50, i * 50))
        await buf.commit()
        # The bound is the directory: database, WAL and index together.
        assert buffer_space.dir_bytes(buf.path) <= limit
    assert caplog.text.count("dropping the oldest") == 1, "logged once per episode"
    assert buf.stats.dropped_batches > 0
    assert buf.stats.dropped_samples == buf.stats.dropped_batches * 50
    assert buf.stats.batches + buf.stats.dropped_batches == 200
    left = await buf.fetch(0, 1000)
    # The newest survive, the oldest went first, and the gap is visible in seq.
    assert left[-1].seq == 200
    assert left[0].seq == buf.stats.dropped_batches + 1
    for b in left:
        buf.ack(b.seq)
    buf.add("a", samples(1))
    await buf.commit()
    assert "no longer dropping" in caplog.text
    await buf.close()


async def test_age_limit_drops_old_batches(tmp_path: Path) -> None:
    buf = make_buffer(tmp_path / "b.sqlite", max_age=3600.0)
    await buf.open()
    buf.add("a", samples(5))
    await buf.commit()
    await buf.close()
    with sqlite3.connect(tmp_path / "b.sqlite") as db:
        db.execute("UPDATE batches SET created_ms = created_ms - 7200000")
    buf = make_buffer(tmp_path / "b.sqlite", max_age=3600.0)
    await buf.open()
    buf.add("a", samples(1))
    await buf.commit()
    assert buf.stats.dropped_batches == 1 and buf.stats.dropped_samples == 5
    assert [b.seq for b in await buf.fetch(0, 10)] == [2]
    await buf.close()


def test_messages_never_exceed_the_limit_and_nan_becomes_bad() -> None:
    many = [Sample(ts=i, values={f"tag{j}": float(j) for j in range(50)}) for i in range(500)]
    packed = pack_batches(many, 16 * 1024)
    assert len(packed) > 1
    assert all(len(p) <= 16 * 1024 for p, _ in packed)
    assert sum(n for _, n in packed) == 500
    # One sample larger than a message is split by tag, keeping its ts.
    huge = [Sample(ts=5, values={f"t{j}": "y" * 100 for j in range(400)})]
    parts = pack_batches(huge, 8 * 1024)
    decoded = [s for p, _ in parts for s in json.loads(p)]
    assert {s["ts"] for s in decoded} == {5}
    assert sum(len(s["values"]) for s in decoded) == 400
    # A single value larger than a message becomes a bad reading, never an oversize message.
    alone = pack_batches([Sample(ts=7, values={"blob": "z" * 5000, "ok": 1})], 1024)
    assert all(len(p) <= 1024 for p, _ in alone)
    got = {k: v for p, _ in alone for s in json.loads(p) for k, v in s["values"].items()}
    assert got == {"blob": None, "ok": 1}
    nan = pack_batches([Sample(ts=1, values={"x": float("nan"), "y": 1.5})], 1024)
    obj = json.loads(nan[0][0])[0]
    assert obj["values"] == {"x": None, "y": 1.5}
    assert obj["bad"] == {"x": "not a finite number"}
