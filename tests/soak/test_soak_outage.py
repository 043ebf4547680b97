"""A broker away for a while behind a small buffer: drops counted exactly, the
directory within max_size, the oldest dropped, everything else delivered.

By hand: ``EDGE_SOAK=long ./dev.sh test tests/soak/test_soak_outage.py -s`` (60 s outage);
CI: 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from agent.config.load import parse_site
from agent.pipeline import buffer_space
from agent.runtime.agent import Agent
from drivers.modbus.simulator import simulate
from tests.conftest import Broker, Collector, async_wait_until
from tests.soak.common import GATEWAY, LONG, delivered, presses, site_text, stored_seqs

OUTAGE_S = 60.0 if LONG else 15.0
MAX_SIZE = 256 * 1024


async def test_outage_overflowing_a_small_buffer(broker: Broker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with contextlib.AsyncExitStack() as stack:
        devices = presses((await simulate(stack, tmp_path))[0], 4, "50ms")
        site = parse_site(site_text(broker.url, devices, max_size=f"{MAX_SIZE // 1024}KB"),
                          "site.yaml")
        agent = Agent(site, state)
        buf = agent.buffer
        run = asyncio.create_task(agent.run())
        try:
            async with Collector(broker, f"m2m/lab/{GATEWAY}/data/#") as col:
                await async_wait_until(lambda: agent.uplink.counters.acked >= 10, 60, "data")
                broker.stop()
                peak = 0
                t_end = time.monotonic() + OUTAGE_S
                # The outage lasts OUTAGE_S, and at least until the buffer overflowed.
                while time.monotonic() < t_end or not buf.stats.dropped_batches:
                    assert time.monotonic() < t_end + 60, "the buffer never overflowed"
                    peak = max(peak, buffer_space.dir_bytes(buf.path))
                    await asyncio.sleep(0.05)
                boundary = await buf.max_seq()
                arrived_before = len(col.messages)
                broker.start()
                await async_wait_until(lambda: any(s > boundary for s in delivered(col)), 30,
                                       "live data after the return")
                await async_wait_until(lambda: buf.stats.batches <= 10, 60, "backlog drained")
                agent.stop()
                await asyncio.wait_for(run, 30)
                left, last = stored_seqs(state)
                await async_wait_until(
                    lambda: len(set(delivered(col)) | left) + buf.stats.dropped_batches
                    - buf.stats.dropped_delivered_batches >= last,
                    30, "every kept batch delivered")
        finally:
            if not run.done():
                agent.stop()
                await asyncio.wait_for(run, 30)
    got = delivered(col)
    missing = sorted(set(range(1, last + 1)) - set(got) - left)
    # Drops are counted exactly: each missing seq is one counted drop (a batch
    # dropped while in flight and acknowledged after all is counted apart).
    assert len(missing) == buf.stats.dropped_batches - buf.stats.dropped_delivered_batches > 0
    # The oldest went: the dropped seqs are one run, older than every kept outage batch.
    assert missing == list(range(missing[0], missing[-1] + 1))
    assert all(s < missing[0] or s > missing[-1] for s in got)
    assert peak <= MAX_SIZE, f"the buffer's files reached {peak} bytes"
    # Live data is not queued behind the backlog.
    order = [int(p.split(b'"seq":')[1].split(b",")[0]) for t, p, _ in col.messages[arrived_before:]
             if "/data/" in t]
    first_live = next(i for i, s in enumerate(order) if s > boundary)
    backlog_done = max(i for i, s in enumerate(order) if s <= boundary)
    print(f"\noutage {OUTAGE_S:.0f} s: {buf.stats.dropped_batches} batches dropped "
          f"({buf.stats.dropped_samples} samples), all counted; directory peak {peak} bytes "
          f"of {MAX_SIZE}; after the return the first live batch was message {first_live + 1}, "
          f"the backlog's last message {backlog_done + 1}")
