"""Core hot path benchmark: store cost per reading and backlog drain rate.

Run: .venv/bin/python tests/bench/bench_core.py [--rounds 5]

1. Store: CPU seconds per million readings for Buffer.add + commit (encode,
   split into messages, SQLite insert, fsync), against a baseline of
   json.dumps of the same samples measured in the same run.
2. Drain: a stored backlog sent to a private Mosquitto through the Uplink
   (QoS 1, deleted on PUBACK), against a baseline of a bare aiomqtt QoS 1
   publish loop of the same payloads with the same in-flight window.
3. Backlog (``--backlog N``, e.g. 300000): N small batches written straight
   into the buffer's table, then drained through the Uplink; reports the
   drain time and the buffer thread's commit times (the oldest-age query
   runs on every commit).
Medians over rounds; this machine is shared, so ratios matter more than
absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiomqtt

from agent.config.model import GatewayConfig, MqttConfig
from agent.pipeline.buffer import Buffer
from agent.pipeline.uplink import Uplink
from agent.sdk.readings import Sample
from tests.conftest import Broker

TAGS = 20
SAMPLES = 25_000  # 500k readings per round
PER_BATCH = 10  # a device polled at 10 Hz, one commit window per batch


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_samples(n: int) -> list[Sample]:
    return [Sample(ts=1_700_000_000_000 + i, values={f"t{j}": i * 0.5 + j for j in range(TAGS)})
            for i in range(n)]


async def store_round(workdir: Path, samples: list[Sample]) -> float:
    buf = Buffer(workdir / "s.sqlite", max_size=2**31, max_age=86400, max_message=128 * 1024,
                 commit_interval=1.0)
    await buf.open()
    t0 = cpu()
    # 10 devices, committed every 1000 samples: like 10 devices over a window.
    for i in range(0, len(samples), 1000):
        buf.add(f"dev{(i // 1000) % 10}", samples[i:i + 1000])
        await buf.commit()
    used = cpu() - t0
    await buf.close()
    (workdir / "s.sqlite").unlink()
    return used


def baseline_round(samples: list[Sample]) -> float:
    t0 = cpu()
    for s in samples:
        json.dumps(s.to_json_obj(), separators=(",", ":"))
    return cpu() - t0


async def drain_round(workdir: Path, broker: Broker, samples: list[Sample]) -> tuple[float, int, float]:
    buf = Buffer(workdir / "d.sqlite", max_size=2**31, max_age=86400, max_message=128 * 1024,
                 commit_interval=0.2)
    await buf.open()
    for i in range(0, len(samples), PER_BATCH):
        buf.add("dev", samples[i:i + PER_BATCH])
        await buf.commit()
    batches = buf.stats.batches
    uplink = Uplink(mqtt=MqttConfig(url=broker.url, max_inflight=16),
                    gateway=GatewayConfig(id="bench", site="b"), buffer=buf,
                    state=lambda s: {"status": s})
    t0, c0 = time.perf_counter(), cpu()
    tasks = [asyncio.create_task(buf.run()), asyncio.create_task(uplink.run())]
    while uplink.counters.acked < batches:
        await asyncio.sleep(0.01)
    wall, used = time.perf_counter() - t0, cpu() - c0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await buf.close()
    (workdir / "d.sqlite").unlink()
    return wall, batches, used


async def bare_publish_round(broker: Broker, payloads: list[bytes]) -> float:
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(16)
    async with aiomqtt.Client("127.0.0.1", broker.port, max_inflight_messages=24,
                              logger=logging.getLogger("bare")) as c:
        async def one(p: bytes) -> None:
            async with sem:
                await c.publish("m2m/b/bench/data/dev", p, qos=1)
        await asyncio.gather(*(one(p) for p in payloads))
    return time.perf_counter() - t0


async def backlog_round(workdir: Path, broker: Broker, n: int) -> tuple[float, float, float]:
    """Drain ``n`` stored batches; returns (wall s, median commit ms, max commit ms)."""
    path = workdir / "backlog.sqlite"
    buf = Buffer(path, max_size=2**31, max_age=86400 * 30, max_message=128 * 1024,
                 commit_interval=0.2)
    await buf.open()  # creates the schema the current code uses
    await buf.close()
    payload = json.dumps([make_samples(1)[0].to_json_obj()], separators=(",", ":")).encode()
    now = int(time.time() * 1000)
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO batches(device, created_ms, samples, payload) VALUES (?,?,?,?)",
                       (("dev", now + i // 1000, 1, payload) for i in range(n)))
    buf = Buffer(path, max_size=2**31, max_age=86400 * 30, max_message=128 * 1024,
                 commit_interval=0.2)
    await buf.open()
    commits: list[float] = []
    plain_commit = buf.commit

    async def timed_commit() -> int:
        t = time.perf_counter()
        added = await plain_commit()
        commits.append((time.perf_counter() - t) * 1000)
        return added

    buf.commit = timed_commit  # type: ignore[method-assign]
    uplink = Uplink(mqtt=MqttConfig(url=broker.url, max_inflight=16),
                    gateway=GatewayConfig(id="bench", site="b"), buffer=buf,
                    state=lambda s: {"status": s})
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(buf.run()), asyncio.create_task(uplink.run())]
    while uplink.counters.acked < n:
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await buf.close()
    path.unlink()
    return wall, statistics.median(commits), max(commits)


async def backlog_main(rounds: int, n: int) -> None:
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # paho: "There are N pending publish calls."
    walls, meds, maxes = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp))
        broker.start()
        try:
            for _ in range(rounds):
                wall, med_ms, max_ms = await backlog_round(Path(tmp), broker, n)
                walls.append(wall)
                meds.append(med_ms)
                maxes.append(max_ms)
        finally:
            broker.stop()
    med = statistics.median
    print(f"backlog: {n} batches drained in {med(walls):.1f} s = {n / med(walls):.0f} batches/s; "
          f"commit on the buffer thread: median {med(meds):.1f} ms, max {med(maxes):.1f} ms "
          f"(rounds={rounds})")


async def main(rounds: int) -> None:
    logging.getLogger("bare").setLevel(logging.ERROR)
    samples = make_samples(SAMPLES)
    readings = SAMPLES * TAGS
    store, base = [], []
    drain_wall, drain_cpu, bare = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(work)
        broker.start()
        try:
            for _ in range(rounds):
                store.append(await store_round(work, samples) / readings * 1e6)
                base.append(baseline_round(samples) / readings * 1e6)
                wall, batches, used = await drain_round(work, broker, samples[:10_000])
                drain_wall.append(wall)
                drain_cpu.append(used)
                payload = json.dumps([s.to_json_obj() for s in samples[:PER_BATCH]]).encode()
                bare.append(await bare_publish_round(broker, [payload] * batches))
        finally:
            broker.stop()
    med = statistics.median
    print(f"store: {med(store):.2f} CPU s per million readings "
          f"(json.dumps baseline {med(base):.2f}; ratio {med(store) / med(base):.2f}x)")
    print(f"drain: {batches} batches of {PER_BATCH} samples x {TAGS} tags in {med(drain_wall):.2f} s = "
          f"{batches / med(drain_wall):.0f} batches/s, {10_000 * TAGS / med(drain_wall):,.0f} readings/s; "
          f"CPU {med(drain_cpu):.2f} s")
    print(f"bare aiomqtt QoS1 publish of the same batches: {med(bare):.2f} s "
          f"(uplink/bare ratio {med(drain_wall) / med(bare):.2f}x)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {rss:.0f} MB (rounds={rounds})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backlog", type=int, default=0, help="drain a backlog of N batches instead")
    args = ap.parse_args()
    if args.backlog:
        asyncio.run(backlog_main(args.rounds, args.backlog))
    else:
        asyncio.run(main(args.rounds))
