"""Brokers benchmark: failover time, AWS-paced backlog drain, NATS vs Mosquitto throughput.

Run: .venv/bin/python tests/bench/bench_brokers.py [--rounds 3] [--devices 5]

1. Failover: data flowing at ~20 batches/s; the broker node in use is
   killed (SIGKILL, a three-node NATS cluster) or stopped (the baseline:
   two independent Mosquittos in one URL list); time from the kill to the
   next PUBACK through another node.
2. Drain: a 10-minute backlog (``--devices`` devices polled every second,
   20 tags) sent under the aws-iot profile's limits (100 publishes/s,
   512 KB/s) against the generic profile (unpaced) in the same run; the
   latency of live readings produced during the paced drain.
3. Throughput: the same stored backlog drained through the Uplink to a
   private NATS (MQTT 3.1.1) and to a private Mosquitto (MQTT 5).
Medians over rounds; the machine is shared, so ratios matter more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiomqtt

from agent.config.model import GatewayConfig, MqttConfig
from agent.pipeline.buffer import Buffer
from agent.pipeline.uplink import Uplink
from agent.sdk.readings import Sample
from tests.brokers.nats import Nats, cluster, wait_mqtt_ready
from tests.conftest import Broker

GATEWAY = GatewayConfig(id="gw1", site="s1")


def state(status: str) -> dict[str, object]:
    return {"status": status}


def sample(i: int, ts: int | None = None) -> Sample:
    return Sample(ts=ts if ts is not None else 1_700_000_000_000 + i * 1000,
                  values={f"t{j}": i * 0.5 + j for j in range(20)})


async def backlog(buf: Buffer, devices: int, seconds: int) -> None:
    for s in range(seconds):
        for d in range(devices):
            buf.add(f"dev{d}", [sample(s)])
        await buf.commit()


@contextlib.asynccontextmanager
async def uplink(workdir: Path, mqtt: MqttConfig) -> AsyncIterator[tuple[Buffer, Uplink]]:
    buf = Buffer(workdir / "b.sqlite", max_size=2**31, max_age=86400, max_message=128 * 1024,
                 commit_interval=0.05)
    await buf.open()
    up = Uplink(mqtt=mqtt, gateway=GATEWAY, buffer=buf, state=state)
    yield buf, up
    await buf.close()


async def drain(workdir: Path, mqtt: MqttConfig, devices: int, seconds: int,
                live_port: int | None = None) -> tuple[float, int, list[float]]:
    """(seconds to drain, bytes sent, live latencies in s) for a fresh backlog."""
    async with uplink(workdir, mqtt) as (buf, up):
        await backlog(buf, devices, seconds)
        total = buf.stats.bytes
        latencies: list[float] = []
        tasks = [asyncio.create_task(buf.run())]
        if live_port is not None:
            tasks.append(asyncio.create_task(watch_live(live_port, latencies)))
            await asyncio.sleep(0.5)
        t0 = time.monotonic()
        tasks.append(asyncio.create_task(up.run()))
        if live_port is not None:
            # Live = stored after the connect (earlier readings are backlog).
            await up.connected.wait()
            tasks.append(asyncio.create_task(produce_live(buf)))
        old = devices * seconds
        while await buf.fetch(0, 1, old):  # a backlog batch not yet acknowledged
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - t0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return elapsed, total, latencies


async def produce_live(buf: Buffer) -> None:
    i = 0
    while True:
        buf.add("live", [sample(i, ts=int(time.time() * 1000))])
        i += 1
        await asyncio.sleep(0.5)


async def watch_live(port: int, out: list[float]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-live") as c:
        await c.subscribe("m2m/s1/gw1/data/live", qos=1)
        async for msg in c.messages:
            body = json.loads(msg.payload if isinstance(msg.payload, bytes) else b"{}")
            for s in body.get("samples", []):
                out.append(time.time() - s["ts"] / 1000)


async def failover_once(workdir: Path, urls: list[str], kill: object) -> float:
    async with uplink(workdir, MqttConfig(url=urls, reconnect_max=2.0, max_inflight=8)) as (
            buf, up):
        async def produce() -> None:
            i = 0
            while True:
                buf.add("dev0", [sample(i)])
                i += 1
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(c) for c in (buf.run(), up.run(), produce())]
        while up.counters.acked < 40:
            await asyncio.sleep(0.02)
        t0 = time.monotonic()
        kill()  # type: ignore[operator]
        # Data flowing again = a PUBACK from another node (acks already in
        # flight from the killed one do not count).
        while up.endpoint.url == urls[0] or not up.connected.is_set():
            await asyncio.sleep(0.005)
        acked = up.counters.acked
        while up.counters.acked <= acked:
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - t0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return elapsed


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--devices", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=10)
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    seconds = int(args.minutes * 60)
    nats_fo: list[float] = []
    mosq_fo: list[float] = []
    aws: list[tuple[float, int, list[float]]] = []
    gen: list[tuple[float, int, list[float]]] = []
    thr_nats: list[float] = []
    thr_mosq: list[float] = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            nodes = cluster(work / "c")
            for n in nodes:
                wait_mqtt_ready(n.mqtt_port, 90)
            (work / "f").mkdir()
            nats_fo.append(await failover_once(work / "f", [n.url for n in nodes], nodes[0].kill))
            for n in nodes:
                n.stop()
            (work / "a").mkdir()
            (work / "b").mkdir()
            a, b = Broker(work / "a"), Broker(work / "b")
            a.start()
            b.start()
            (work / "g").mkdir()
            mosq_fo.append(await failover_once(work / "g", [a.url, b.url], a.stop))
            a.stop()
            (work / "p").mkdir()
            aws.append(await drain(work / "p", MqttConfig(url=b.url, profile="aws-iot",
                                                          max_inflight=16), args.devices,
                                   seconds, live_port=b.port))
            (work / "q").mkdir()
            gen.append(await drain(work / "q", MqttConfig(url=b.url, max_inflight=16),
                                   args.devices, seconds))
            solo = Nats(work, "solo")
            solo.start()
            wait_mqtt_ready(solo.mqtt_port)
            (work / "n").mkdir()
            n_el, _, _ = await drain(work / "n", MqttConfig(url=solo.url, max_inflight=16),
                                     args.devices, seconds)
            (work / "m").mkdir()
            m_el, _, _ = await drain(work / "m", MqttConfig(url=b.url, max_inflight=16),
                                     args.devices, seconds)
            thr_nats.append(args.devices * seconds / n_el)
            thr_mosq.append(args.devices * seconds / m_el)
            solo.stop()
            b.stop()
        print(f"round {r + 1}: failover nats {nats_fo[-1]:.2f}s mosquitto {mosq_fo[-1]:.2f}s; "
              f"drain aws {aws[-1][0]:.1f}s generic {gen[-1][0]:.1f}s; "
              f"throughput nats {thr_nats[-1]:.0f}/s mosquitto {thr_mosq[-1]:.0f}/s", flush=True)
    med = statistics.median
    msgs = args.devices * seconds
    aws_s = med(x[0] for x in aws)
    gen_s = med(x[0] for x in gen)
    live = sorted(v for x in aws for v in x[2])
    print(f"\nfailover (kill -> next PUBACK), median of {args.rounds}:")
    print(f"  NATS 3-node cluster, node killed: {med(nats_fo):.2f} s")
    print(f"  Mosquitto pair, broker stopped:   {med(mosq_fo):.2f} s (baseline)")
    print(f"drain of a {args.minutes:g}-minute backlog ({msgs} messages, "
          f"{med(x[1] for x in aws) / 1024:.0f} KB stored):")
    print(f"  aws-iot profile: {aws_s:.1f} s = {msgs / aws_s:.0f} msg/s "
          f"(limit 100/s), {med(x[1] for x in aws) / aws_s / 1024:.0f} KB/s (limit 512)")
    print(f"  generic (baseline): {gen_s:.1f} s = {msgs / gen_s:.0f} msg/s; ratio {aws_s / gen_s:.1f}x")
    if live:
        print(f"  live readings during the paced drain: median latency "
              f"{statistics.median(live) * 1000:.0f} ms, max {live[-1] * 1000:.0f} ms "
              f"({len(live)} readings)")
    print("publish throughput (backlog drain, QoS 1, window 16), median:")
    print(f"  NATS (MQTT 3.1.1): {med(thr_nats):.0f} msg/s")
    print(f"  Mosquitto (MQTT 5): {med(thr_mosq):.0f} msg/s (baseline); "
          f"ratio {med(thr_nats) / med(thr_mosq):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
