"""Data messages never exceed max_message: the envelope is measured as encoded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agent.config.model import GatewayConfig, MqttConfig
from agent.pipeline.buffer import Buffer, StoredBatch
from agent.pipeline.encoders.json import MAX_SEQ, JsonEncoder, encode_sample
from agent.pipeline.uplink import Uplink
from agent.sdk.readings import Sample
from tests.conftest import Broker, Collector, async_wait_until

GATEWAY = "gw-press-line-2-hall-b-0042"  # 27 characters, as in the report
DEVICE = "Presse-Öl-Kühlung-Süd-äöü-€"  # non-ASCII: \uXXXX, 6 bytes per character
LIMIT = 1024


def state(status: str) -> dict[str, Any]:
    return {"status": status}


def test_overhead_is_the_envelope_as_encoded_at_the_largest_seq() -> None:
    enc = JsonEncoder(GATEWAY)
    samples = b'[{"ts":1,"values":{"x":1}}]'
    msg = enc.encode(StoredBatch(MAX_SEQ, DEVICE, 0, samples))
    assert len(msg) == enc.overhead(DEVICE) + len(samples)
    assert json.loads(msg) == {"gateway": GATEWAY, "device": DEVICE, "seq": MAX_SEQ,
                               "samples": [{"ts": 1, "values": {"x": 1}}]}
    # A small seq is never larger than the budget.
    assert len(enc.encode(StoredBatch(1, DEVICE, 0, samples))) < len(msg)


def exact_sample(limit: int, device: str) -> Sample:
    """One sample whose message at a 19-digit seq is exactly ``limit`` bytes."""
    room = limit - JsonEncoder(GATEWAY).overhead(device) - 2  # the array's brackets
    base = len(encode_sample(Sample(ts=1, values={"s": ""})))
    return Sample(ts=1, values={"s": "x" * (room - base)})


async def test_messages_fit_max_message_exactly_with_long_and_non_ascii_names(
        broker: Broker, tmp_path: Path) -> None:
    buf = Buffer(tmp_path / "b.sqlite", max_size=64 * 1024**2, max_age=86400,
                 max_message=LIMIT, commit_interval=0.05)
    await buf.open()
    assert buf.store.db is not None
    # Start seq at 19 digits, the widest the envelope can get.
    buf.store.db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('batches', ?)",
                    (9_000_000_000_000_000_000,))
    uplink = Uplink(mqtt=MqttConfig(url=broker.url, max_message=LIMIT),
                    gateway=GatewayConfig(id=GATEWAY, site="s"), buffer=buf, state=state)
    buf.add(DEVICE, [exact_sample(LIMIT, DEVICE)])
    await buf.commit()
    buf.add("d" * 28, [exact_sample(LIMIT, "d" * 28)])
    await buf.commit()
    # Many ordinary samples with non-ASCII strings and long tag names, packed together.
    buf.add(DEVICE, [Sample(ts=i, values={"Temperatur_Öl_" + "t" * (i % 30): "Grüße ✓ 𝄞" * (i % 7),
                                          "n": i}) for i in range(300)])
    async with Collector(broker, "m2m/s/#") as col:
        tasks = [asyncio.create_task(buf.run()), asyncio.create_task(uplink.run())]
        try:
            await async_wait_until(lambda: buf.stats.committed_batches > 2 and
                                   uplink.counters.acked == buf.stats.committed_batches, 30,
                                   "every batch acked")
            await async_wait_until(lambda: len(col.json_payloads("/data/" + DEVICE)) + len(
                col.json_payloads("/data/" + "d" * 28)) == buf.stats.committed_batches, 30,
                "every message received")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    sizes = [len(p) for t, p, _ in col.messages if "/data/" in t]
    assert max(sizes) == LIMIT, "the limit is reachable, exactly"
    assert all(n <= LIMIT for n in sizes), sorted(sizes)[-5:]
    got = [json.loads(p) for t, p, _ in col.messages if "/data/" in t]
    assert sum(len(m["samples"]) for m in got) == 302
    assert {len(str(m["seq"])) for m in got} == {19}
    await buf.close()
