"""Report by exception: bytes and messages on the wire, and what the stage costs.

Run: .venv/bin/python tests/bench/bench_report.py [--rounds 5] [--polls 60]

A site of 10,000 tags polled every 1 s, where per poll 5 % of the values
move past their deadband, 20 % jitter inside it and the rest stand still.
The same polls go through the agent's path from the scheduler's sink to the
stored messages (processing stage, Buffer.add, commit: encode, split,
SQLite) with

- ``report: always`` (the json default; no step is built), and
- ``report: change`` with ``deadband: 0.5`` and ``heartbeat: 5m``, and
- the same plus ``stale_after: 10m`` (two steps: stale, then report).

Wire figures are the data messages the uplink would publish (envelope,
topic and MQTT header included), per second of polling, after the first
poll (which sends every tag in both modes; shown apart).  CPU is seconds per
million readings *polled*: the whole path in each mode, and the stage alone
(its ``process`` calls) against the plain ``always`` path measured in the
same round.  Medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.pipeline.buffer import Buffer
from agent.pipeline.processing import Processing
from agent.sdk import DeviceConfig, Sample

TAGS = 10_000
MOVE, JITTER = 0.05, 0.20
DEADBAND = 0.5
TOPIC = "m2m/plant-2/gw-press-1/data/site"
# {"gateway":"gw-press-1","device":"site","seq":123456,"samples":...} and an
# MQTT 3.1.1 PUBLISH header (fixed header, topic length, packet id).
ENVELOPE = len('{"gateway":"gw-press-1","device":"site","seq":123456,"samples":}')
MQTT_HEADER = 5 + 2 + 2


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_polls(n: int, seed: int = 7) -> list[Sample]:
    rng = random.Random(seed)
    values = [round(rng.uniform(0, 100), 2) for _ in range(TAGS)]
    names = [f"tag{i:05d}" for i in range(TAGS)]
    polls = []
    for p in range(n):
        if p:
            for i in rng.sample(range(TAGS), int(TAGS * MOVE)):
                values[i] = round(values[i] + rng.choice((-1, 1)) * rng.uniform(0.6, 3), 2)
            current = list(values)
            for i in rng.sample(range(TAGS), int(TAGS * JITTER)):
                current[i] = round(values[i] + rng.uniform(-0.2, 0.2), 2)
        else:
            current = list(values)
        polls.append(Sample(1_800_000_000_000 + p * 1000, dict(zip(names, current, strict=True))))
    return polls


MODES = ("always", "change", "change+stale")


def device(mode: str) -> DeviceConfig:
    extra: dict[str, Any] = {"report": mode.split("+")[0]}
    if mode != "always":
        extra |= {"deadband": DEADBAND, "heartbeat": "5m"}
    if mode.endswith("+stale"):
        extra["stale_after"] = "10m"
    return DeviceConfig.model_validate(
        {"name": "site", "driver": "bench", "poll": "1s",
         "tags": [{"name": f"tag{i:05d}"} for i in range(TAGS)], **extra})


async def one_round(work: Path, polls: list[Sample], mode: str) -> dict[str, float]:
    processing = Processing()
    processing.apply([device(mode)])
    buf = Buffer(work / f"{mode}.sqlite", max_size=2**31, max_age=86400,
                 max_message=128 * 1024, commit_interval=1.0)
    await buf.open()
    wire_first = msgs_first = 0
    wire = msgs = 0
    stage = 0.0
    cursor = 0  # the last seq "sent"
    t0 = cpu()
    for i, poll in enumerate(polls):
        s0 = cpu()
        out = processing("site", [poll])
        stage += cpu() - s0
        buf.add("site", out)
        added = await buf.commit()
        # What the uplink publishes: read back this commit's messages.
        batches = await buf.fetch(cursor, 1000)
        size = sum(len(b.samples_json) + ENVELOPE + len(TOPIC) + MQTT_HEADER for b in batches)
        for b in batches:
            buf.ack(b.seq)
            cursor = b.seq
        if i == 0:
            wire_first, msgs_first = size, added
        else:
            wire += size
            msgs += added
    total = cpu() - t0
    await buf.close()
    (work / f"{mode}.sqlite").unlink()
    seconds = len(polls) - 1  # one poll per second after the first
    readings = len(polls) * TAGS
    return {"bytes_s": wire / seconds, "msgs_s": msgs / seconds, "first_bytes": wire_first,
            "first_msgs": msgs_first, "cpu": total / readings * 1e6,
            "stage": stage / readings * 1e6}


async def main(rounds: int, n: int) -> None:
    polls = make_polls(n)
    res: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for mode in MODES:
                res[mode].append(await one_round(Path(tmp), polls, mode))

    def med(report: str, key: str) -> float:
        return statistics.median(r[key] for r in res[report])

    print(f"{TAGS} tags at 1 s, {MOVE:.0%} move past the deadband per poll, {JITTER:.0%} jitter "
          f"inside it; {n} polls, {rounds} rounds (medians)")
    for report in MODES:
        print(f"  {report:12s} wire {med(report, 'bytes_s') / 1024:8.1f} KiB/s, "
              f"{med(report, 'msgs_s'):5.2f} messages/s (first poll "
              f"{med(report, 'first_bytes') / 1024:.0f} KiB in {med(report, 'first_msgs'):.0f}); "
              f"path {med(report, 'cpu'):.3f} CPU s per million readings polled")
    ratio = med("always", "bytes_s") / med("change", "bytes_s")
    print(f"  bytes always/change: {ratio:.1f}x fewer; messages "
          f"{med('always', 'msgs_s') / med('change', 'msgs_s'):.1f}x fewer")
    plain = med("always", "cpu")
    print(f"  stage alone: {med('change', 'stage'):.3f} CPU s per million readings polled "
          f"= {med('change', 'stage') / plain:.0%} of the plain path ({plain:.3f}); "
          f"whole change path {med('change', 'cpu') / plain:.0%} of plain")
    print(f"  stale + report: {med('change+stale', 'stage'):.3f} CPU s per million readings "
          f"polled = {med('change+stale', 'stage') / plain:.0%} of the plain path")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of this process: {rss:.0f} MB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--polls", type=int, default=60)
    args = ap.parse_args()
    asyncio.run(main(args.rounds, args.polls))
