"""Sparkplug B benchmark: bytes per changed reading, CPU per million readings,
and the replay rate of a one-hour backlog while live data flows.

Run: .venv/bin/python tests/bench/bench_sparkplug.py [--rounds 5]

1. Bytes on the wire per changed reading at 10,000 tags/s (10 devices x
   1,000 float32 tags, every tag changed every second): DDATA (alias-only
   metrics, each with its ms timestamp) against the JSON format's data
   message for the same batches, both with the MQTT PUBLISH header and topic.
2. CPU seconds per million readings to turn stored batches into DDATA bytes
   (JSON decode + protobuf build + serialise), against the JSON baseline
   measured in the same run (the buffer's pack_batches: the JSON uplink
   sends what is stored as is).
3. Replay: a one-hour backlog (50 tags at 1 Hz per device, 4 devices: 720k
   readings) stored while the primary host was away, replayed as historical
   DDATA to a private Mosquitto through the real node while a live device
   keeps producing; readings/s replayed and the live data's latency (median
   and max, ms from reading to subscriber) during the replay against the
   latency with no backlog.
Medians over rounds; the machine is shared, so ratios matter more than absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


from agent.config.load import parse_site
from agent.pipeline.buffer import Buffer, pack_batches
from agent.pipeline.sparkplug.devices import AliasTable, DeviceModel
from agent.sdk.readings import Sample
from tests.conftest import Broker

DEVICES, TAGS = 10, 1000          # 10,000 tags per second
SECONDS = 10


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def device_config(name: str, tags: int) -> Any:
    text = json.dumps({
        "gateway": {"id": "gw", "site": "s"},
        "uplink": {"mqtt": {"url": "mqtt://127.0.0.1:1", "format": "sparkplug_b"}},
        "devices": [{"name": name, "driver": "modbus", "connection": {
            "transport": "tcp", "host": "127.0.0.1", "port": 502},
            "tags": [{"name": f"t{j}", "address": f"HR{2 * j}", "type": "float32"}
                     for j in range(tags)]}],
    })
    return parse_site(text).devices[0]


def samples(seconds: int, tags: int, t0: int = 1_764_000_000_000) -> list[Sample]:
    # Values that change every second by a non-trivial amount (float32 range).
    return [Sample(t0 + s * 1000, {f"t{j}": round(20.0 + j * 0.01 + s * 0.37, 2)
                                   for j in range(tags)}) for s in range(seconds)]


def mqtt_overhead(topic: str, payload: int) -> int:
    """Fixed header + remaining length + topic + packet id + (MQTT 5) properties length."""
    rest = 2 + len(topic) + 2 + 1 + payload
    return 1 + (1 if rest < 128 else 2 if rest < 16384 else 3) + rest - payload


def bytes_round() -> tuple[float, float]:
    """(sparkplug, json) bytes per changed reading for one second of 10,000 tags."""
    cfg = device_config("press", TAGS)
    model = DeviceModel(cfg, AliasTable(), {})
    model.birth({}, seq=1, now=0)
    data = samples(SECONDS, TAGS)
    sp = js = 0
    readings = 0
    for _dev in range(DEVICES):
        for second in range(SECONDS):
            batch = [data[second]]
            for stored, _n in pack_batches(batch, 128 * 1024 - 96):
                envelope = b'{"gateway":"gw","device":"press","seq":123456,"samples":' + stored + b"}"
                js += len(envelope) + mqtt_overhead("m2m/s/gw/data/press", len(envelope))
                payload, count = model.data(stored, now=0, historical=False)
                payload.seq = 17
                raw = payload.SerializeToString()
                sp += len(raw) + mqtt_overhead("spBv1.0/s/DDATA/gw/press", len(raw))
                readings += count
    return sp / readings, js / readings


def cpu_round(n_seconds: int = 100) -> tuple[float, float]:
    """CPU s per million readings: sparkplug encode of stored batches, and JSON pack_batches."""
    cfg = device_config("press", TAGS)
    data = samples(n_seconds, TAGS)
    t0 = cpu()
    stored = [p for s in data for p, _ in pack_batches([s], 128 * 1024 - 96)]
    json_cpu = cpu() - t0
    model = DeviceModel(cfg, AliasTable(), {})
    model.birth({}, seq=1, now=0)
    t0 = cpu()
    readings = 0
    for batch in stored:
        payload, count = model.data(batch, now=0, historical=False)
        payload.SerializeToString()
        readings += count
    sp_cpu = cpu() - t0
    per = 1e6 / (n_seconds * TAGS)
    return sp_cpu * per, json_cpu * per


async def replay_round(workdir: Path) -> dict[str, float]:
    from agent.config.model import GatewayConfig, MqttConfig
    from agent.pipeline.sparkplug.context import NodeContext, TagCache
    from agent.pipeline.uplink import Uplink

    broker = Broker(workdir)
    broker.start()
    try:
        tags = 50
        configs = [device_config(f"d{i}", tags) for i in range(4)] + [device_config("live", 5)]
        buf = Buffer(workdir / "b.sqlite", max_size=2**31, max_age=86400 * 2,
                     max_message=128 * 1024, commit_interval=0.1)
        await buf.open()
        t0 = int(time.time() * 1000) - 3_600_000
        for minute in range(60):   # one hour at 1 Hz, committed a minute at a time
            for i in range(4):
                buf.add(f"d{i}", [Sample(t0 + (minute * 60 + s) * 1000,
                                         {f"t{j}": float(minute * 60 + s + j) for j in range(tags)})
                                  for s in range(60)])
            await buf.commit()
        backlog_readings = 60 * 60 * 4 * tags
        cache = TagCache()
        cache.enabled = True
        for c in configs:
            cache.observe(c.name, [Sample(t0, dict.fromkeys(c.tag_names(), 0.0))])
        uplink = Uplink(mqtt=MqttConfig(url=broker.url, format="sparkplug_b"),
                        gateway=GatewayConfig(id="gw", site="s"), buffer=buf,
                        state=lambda s: {"status": s})
        uplink.node_context = NodeContext(state_dir=workdir, devices=lambda: configs,
                                          latest=cache.get)
        lat: list[float] = []
        hist_done: list[float] = []
        first_hist: list[float] = []
        # The subscriber runs in its own process: decoding 720k readings must
        # not be charged to the agent's event loop (and so to its latency).
        sub = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SUBSCRIBER, str(broker.port), str(backlog_readings),
            stdout=asyncio.subprocess.PIPE, cwd=str(Path(__file__).resolve().parents[2]))
        assert sub.stdout is not None
        stdout = sub.stdout

        async def subscribe(ready: asyncio.Event) -> None:
            async for line in stdout:
                kind, at, value = line.decode().split()
                if kind == "ready":
                    ready.set()
                elif kind == "first":
                    first_hist.append(float(at))
                elif kind == "done":
                    hist_done.append(float(at))
                else:
                    lat.append(float(value))

        async def live() -> None:
            k = 0
            while True:
                k += 1
                s = Sample(int(time.time() * 1000), {f"t{j}": float(k + j) for j in range(5)})
                cache.observe("live", [s])
                buf.add("live", [s])
                # Not a multiple of the commit interval: readings land all over the window.
                await asyncio.sleep(0.037)

        ready = asyncio.Event()
        tasks = [asyncio.create_task(subscribe(ready))]
        await ready.wait()
        tasks += [asyncio.create_task(t) for t in (buf.run(), live())]
        tasks.append(asyncio.create_task(uplink.run()))
        # History is what was stored before the births: the uplink's first connect here.
        deadline = time.monotonic() + 600
        while not hist_done and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        during = list(lat)
        lat.clear()
        await asyncio.sleep(3)  # live latency with the backlog gone: the baseline
        baseline = list(lat)
        lat = during
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await buf.close()
        sub.kill()
        await sub.wait()
        seconds = (hist_done[0] - first_hist[0]) / 1000 if hist_done else float("nan")
        return {
            "replay_readings_per_s": backlog_readings / seconds,
            "replay_s": seconds,
            "live_latency_median_ms": statistics.median(lat) if lat else float("nan"),
            "live_latency_max_ms": max(lat) if lat else float("nan"),
            "baseline_latency_median_ms": statistics.median(baseline) if baseline else float("nan"),
        }
    finally:
        broker.stop()


SUBSCRIBER = """
import sys, time
import paho.mqtt.client as mqtt
from agent.pipeline.encoders.sparkplug import sparkplug_b_pb2 as pb
port, backlog = int(sys.argv[1]), int(sys.argv[2])
hist = 0
def out(*a):
    print(*a, flush=True)
def on_connect(c, u, f, rc, p=None):
    c.subscribe("spBv1.0/s/DDATA/gw/#", qos=1)
def on_subscribe(c, u, mid, rc, p=None):
    out("ready", 0, 0)
def on_message(c, u, m):
    global hist
    now = time.time() * 1000
    p = pb.Payload(); p.ParseFromString(m.payload)
    if not p.metrics:
        return
    if p.metrics[0].is_historical:
        if hist == 0:
            out("first", now, 0)
        hist += len(p.metrics)
        if hist >= backlog:
            out("done", now, 0)
    else:
        out("live", now, now - max(x.timestamp for x in p.metrics))
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port)
c.loop_forever()
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sizes = [bytes_round() for _ in range(1)]
    print(f"bytes/changed reading at {DEVICES * TAGS} tags/s: sparkplug {sizes[0][0]:.2f}, "
          f"json {sizes[0][1]:.2f} (ratio {sizes[0][0] / sizes[0][1]:.2f})")
    cpus = [cpu_round() for _ in range(args.rounds)]
    sp = statistics.median(c[0] for c in cpus)
    js = statistics.median(c[1] for c in cpus)
    print(f"CPU s per million readings: sparkplug encode {sp:.2f}, json pack baseline {js:.2f} "
          f"(ratio {sp / js:.2f})")
    runs = []
    for _ in range(max(1, args.rounds // 2)):
        with tempfile.TemporaryDirectory() as d:
            runs.append(asyncio.run(replay_round(Path(d))))
    for key in runs[0]:
        print(f"replay {key}: {statistics.median(r[key] for r in runs):.1f}")


if __name__ == "__main__":
    main()
