"""Buffer + uplink against a real Mosquitto that is stopped and restarted."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

from agent.config.model import GatewayConfig, MqttConfig
from agent.pipeline.buffer import Buffer
from agent.pipeline.uplink import Uplink
from agent.sdk.readings import Sample
from tests.conftest import Broker, Collector, async_wait_until


def state(status: str) -> dict[str, Any]:
    return {"status": status, "version": "test", "started_at": "now", "config_hash": "x"}


async def test_broker_restart_mid_stream_delivers_everything_in_order(
    broker: Broker, tmp_path: Path
) -> None:
    buffer = Buffer(tmp_path / "b.sqlite", max_size=64 * 1024**2, max_age=86400,
                    max_message=128 * 1024, commit_interval=0.05)
    await buffer.open()
    mqtt = MqttConfig(url=broker.url, reconnect_max=2.0, max_inflight=4)
    uplink = Uplink(mqtt=mqtt, gateway=GatewayConfig(id="gw1", site="s1"), buffer=buffer,
                    state=state)
    counter = itertools.count()
    produced: list[int] = []

    async def produce() -> None:
        while True:
            for dev in ("d1", "d2"):
                n = next(counter)
                produced.append(n)
                buffer.add(dev, [Sample(ts=n, values={"n": n})])
            await asyncio.sleep(0.01)

    async with Collector(broker, "m2m/s1/gw1/#") as col:
        tasks = [asyncio.create_task(t) for t in (buffer.run(), uplink.run(), produce())]
        try:
            await async_wait_until(lambda: uplink.counters.acked >= 10, 30, "first acks")
            broker.stop()
            # While the broker is away, readings pile up in the buffer.
            await async_wait_until(lambda: buffer.stats.batches >= 20, 30, "backlog")
            broker.start()
            await async_wait_until(lambda: uplink.counters.connected, 30, "reconnect")
            await async_wait_until(lambda: uplink.counters.acked >= 60, 30, "live after restart")
            tasks[2].cancel()
            await buffer.commit()
            last = await buffer.max_seq()
            await async_wait_until(lambda: buffer.stats.batches == 0, 60, "backlog drained")

            def seqs() -> set[int]:
                return {int(p["seq"]) for p in col.json_payloads() if "seq" in p}

            await async_wait_until(lambda: seqs() >= set(range(1, last + 1)), 30,
                                   "every seq at the subscriber")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await buffer.close()

        data = col.json_payloads("/data/d1") + col.json_payloads("/data/d2")
        by_seq = {p["seq"]: p for p in data}  # duplicates (at least once) collapse by seq
        assert sorted(by_seq) == list(range(1, last + 1)), "a gap in seq"
        got = sorted(int(s["values"]["n"]) for p in by_seq.values() for s in p["samples"])
        assert got == sorted(produced), "a reading was lost or duplicated"
        for dev in ("d1", "d2"):
            ordered = [int(s["values"]["n"]) for p in sorted(
                (p for p in by_seq.values() if p["device"] == dev), key=lambda p: p["seq"])
                for s in p["samples"]]
            assert ordered == sorted(ordered), f"{dev} out of order"
        states = [json.loads(p) for t, p, _ in col.messages if t.endswith("/state")]
        assert states and states[-1]["status"] == "online"


async def test_reconfigure_is_immediate_and_never_swallows_a_stop(
    broker: Broker, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    buffer = Buffer(tmp_path / "b.sqlite", max_size=2**20, max_age=86400,
                    max_message=128 * 1024, commit_interval=0.05)
    await buffer.open()
    dead = MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}", reconnect_max=60)
    gateway = GatewayConfig(id="gw1", site="s1")
    uplink = Uplink(mqtt=dead, gateway=gateway, buffer=buffer, state=state)
    task = asyncio.create_task(uplink.run())
    try:
        # Four refusals: the next attempt is 4-8 s away.
        await async_wait_until(lambda: uplink.counters.errors >= 4, 30, "refusals")
        t0 = asyncio.get_running_loop().time()
        uplink.reconfigure(MqttConfig(url=broker.url), gateway)
        await async_wait_until(lambda: uplink.counters.connected, 30, "the new broker")
        assert asyncio.get_running_loop().time() - t0 < 3, "waited out the old backoff"
        # Switch to a dead broker and stop at once: the stop must win.
        uplink.reconfigure(dead, gateway)
        await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done, "the uplink swallowed its cancellation"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await buffer.close()
