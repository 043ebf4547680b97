"""A producer feeding a buffer, an uplink to run, and the checks of what arrived."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from agent.config.model import GatewayConfig, MqttConfig
from agent.pipeline.buffer import Buffer
from agent.pipeline.uplink import Uplink
from agent.sdk.readings import Sample
from tests.conftest import Broker, Collector, async_wait_until

GATEWAY = GatewayConfig(id="gw1", site="s1")
BASE = "m2m/s1/gw1"


def state(status: str) -> dict[str, Any]:
    return {"status": status, "version": "test", "started_at": "now", "config_hash": "x"}


def at(port: int) -> Broker:
    """A Collector target on any MQTT port (it only needs ``.port``)."""
    return cast(Broker, SimpleNamespace(port=port))


class Stream:
    """Readings into a buffer, an uplink sending them; ``produced`` is the truth."""

    def __init__(self, tmp_path: Path, mqtt: MqttConfig) -> None:
        self.buffer = Buffer(tmp_path / "b.sqlite", max_size=64 * 1024**2, max_age=86400,
                             max_message=128 * 1024, commit_interval=0.05)
        self.uplink = Uplink(mqtt=mqtt, gateway=GATEWAY, buffer=self.buffer, state=state)
        self.produced: list[int] = []
        self._counter = itertools.count()
        self.tasks: list[asyncio.Task[None]] = []

    async def _produce(self, period: float) -> None:
        while True:
            for dev in ("d1", "d2"):
                n = next(self._counter)
                self.produced.append(n)
                self.buffer.add(dev, [Sample(ts=n, values={"n": n})])
            await asyncio.sleep(period)

    @contextlib.asynccontextmanager
    async def running(self, period: float = 0.01) -> AsyncIterator[Stream]:
        await self.buffer.open()
        self.tasks = [asyncio.create_task(c) for c in
                      (self.buffer.run(), self.uplink.run(), self._produce(period))]
        try:
            yield self
        finally:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.buffer.close()

    async def finish(self, col: Collector, timeout: float = 60) -> None:
        """Stop producing, wait until every stored batch is at the subscriber, and check it."""
        self.tasks[2].cancel()
        await self.buffer.commit()
        last = await self.buffer.max_seq()
        await async_wait_until(lambda: self.buffer.stats.batches == 0, timeout, "buffer drained")
        await async_wait_until(lambda: set(range(1, last + 1)) <= seqs(col), timeout,
                               "every seq at the subscriber")
        check_complete(col, self.produced, last)


def data(col: Collector) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in col.messages if "/data/" in t and p]


def seqs(col: Collector) -> set[int]:
    return {int(p["seq"]) for p in data(col)}


def check_complete(col: Collector, produced: list[int], last: int) -> None:
    """No gap in seq, every reading once (by seq), each device in order."""
    by_seq = {int(p["seq"]): p for p in data(col)}  # at-least-once duplicates collapse
    assert sorted(by_seq) == list(range(1, last + 1)), "a gap in seq"
    got = sorted(int(s["values"]["n"]) for p in by_seq.values() for s in p["samples"])
    assert got == sorted(produced), "a reading was lost or duplicated"
    for dev in ("d1", "d2"):
        ordered = [int(s["values"]["n"])
                   for p in sorted((p for p in by_seq.values() if p["device"] == dev),
                                   key=lambda p: int(p["seq"]))
                   for s in p["samples"]]
        assert ordered == sorted(ordered), f"{dev} out of order"


def states(col: Collector) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in col.messages if t.endswith("/state") and p]
