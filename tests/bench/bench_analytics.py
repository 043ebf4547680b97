"""Edge analytics benchmark: CPU per million readings, analytics on vs the plain path.

Run: .venv/bin/python tests/bench/bench_analytics.py [--rounds 5]

One device of 100 tags polled every second, through the sink path
(processing stage -> Buffer.add -> commit: encode, split into messages,
SQLite insert, fsync):

- plain: 100 tags read, no analytics options (the stage has no steps);
- analytics: 90 tags read plus 10 computed (10 %), every one of the 100 in
  a 1 m window (min max mean last count), and 100 alarms (one per tag, with
  hysteresis); the window-end samples and the alarm events are stored too.

Both send 100 tag values per sample; CPU seconds are per million of them
(readings).  Medians over rounds, both paths in every round; the machine
is shared, so the ratio matters more than the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import math
import resource
import statistics
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.pipeline.buffer import Buffer
from agent.pipeline.processing import Processing
from agent.sdk.readings import Sample
from drivers.modbus.options import ModbusDevice

TAGS = 100
COMPUTED = 10
READ_TAGS = TAGS - COMPUTED
SAMPLES = 6_000  # 600k readings a round: 100 minutes of a 1 s poll
COMMIT_EVERY = 10  # a 1 s commit window at 1 s polls would be 1; 10 devices' worth


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def device(analytics: bool) -> ModbusDevice:
    tags = [{"name": f"t{i}", "address": f"HR{2 * i}", "type": "float32"}
            for i in range(READ_TAGS if analytics else TAGS)]
    options: dict[str, Any] = {}
    if analytics:
        computed = [{"name": f"c{i}", "expr": f"t{i} * t{i + 1} / 1000 + 0.5"}
                    for i in range(COMPUTED)]
        every = [t["name"] for t in tags] + [c["name"] for c in computed]
        options = {
            "computed": computed,
            "aggregate": [{"every": "1m", "tags": every}],
            "alarms": [{"name": f"a_{name}", "tag": name, "above": 90.0, "clear_below": 85.0}
                       for name in every],
        }
    return ModbusDevice.model_validate({
        "name": "dev", "driver": "modbus",
        "connection": {"transport": "tcp", "host": "127.0.0.1", "port": 502},
        "tags": tags, **options})


def as_float32(x: float) -> float:
    """What a float32 register decodes to (long reprs, as on a real site)."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def make_samples(n: int, tags: int) -> list[Sample]:
    # Each tag swings between 5 and 95 over ten minutes, phase-shifted per
    # tag: every alarm goes active and clears once per swing (about one
    # event every 3 samples across the device), the rest of the time quiet.
    # Stamped in the future: windows before the step was built would be partial.
    start = 2_000_000_000_000
    return [Sample(ts=start + 1000 * i,
                   values={f"t{j}": as_float32(50.0 + 45.0 * math.sin(i * math.tau / 600 + j))
                           for j in range(tags)})
            for i in range(n)]


async def store_round(workdir: Path, config: ModbusDevice, samples: list[Sample]) -> float:
    buf = Buffer(workdir / "s.sqlite", max_size=2**31, max_age=86400, max_message=128 * 1024,
                 commit_interval=1.0)
    await buf.open()
    stage = Processing()
    stage.apply([config])
    # The round's samples are all alive at once (a gateway holds one poll's
    # worth): keep the collector from walking them again and again.
    gc.collect()
    gc.freeze()
    t0 = cpu()
    for i in range(0, len(samples), COMMIT_EVERY):
        buf.add("dev", stage("dev", samples[i:i + COMMIT_EVERY]))
        await buf.commit()
    used = cpu() - t0
    gc.unfreeze()
    await buf.close()
    (workdir / "s.sqlite").unlink()
    return used


async def main(rounds: int) -> None:
    plain_samples, analytics_samples = make_samples(SAMPLES, TAGS), make_samples(SAMPLES, READ_TAGS)
    readings = SAMPLES * TAGS
    plain_cfg, analytics_cfg = device(False), device(True)
    plain, analytics = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(rounds):
            # Fresh copies: computed tags and events are added to samples in place.
            plain.append(await store_round(work, plain_cfg, copy.deepcopy(plain_samples))
                         / readings * 1e6)
            analytics.append(await store_round(work, analytics_cfg,
                                               copy.deepcopy(analytics_samples))
                             / readings * 1e6)
    med = statistics.median
    print(f"plain path:     {med(plain):.2f} CPU s per million readings")
    print(f"with analytics: {med(analytics):.2f} CPU s per million readings "
          f"({COMPUTED} computed of {READ_TAGS + COMPUTED} tags, all in a 1 m window, "
          f"{READ_TAGS + COMPUTED} alarms)")
    ratios = [a / p for a, p in zip(analytics, plain, strict=True)]
    print(f"ratio {med(analytics) / med(plain):.2f}x of the medians, {med(ratios):.2f}x median "
          f"of the per-round ratios (target <= 1.3x); rounds={rounds}")
    print(f"  plain {[round(x, 2) for x in plain]}")
    print(f"  analytics {[round(x, 2) for x in analytics]}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(ap.parse_args().rounds))
