"""How long a reload of a 10,000-tag site file stalls the event loop (what devices feel).

    .venv/bin/python -m tests.bench.bench_reload [rounds]

A ticker on the loop wakes every 5 ms while the file is validated; the
longest gap between two wake-ups is the stall a poll loop sees.  Variants,
measured in the same run: validation on the loop (the old SIGHUP path), in a
thread (the old ``config.apply`` path) and in a thread with cyclic GC paused
(``agent.runtime.reload.load_registered``), and that waiting on a forked
child which validates (``agent.config.offload``: SIGHUP now).  Medians over rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable

import yaml

from agent.config.load import Site, parse_site
from agent.config.offload import off_process
from agent.runtime.reload import load_registered


def big_site(tags: int = 10_000) -> str:
    return yaml.safe_dump({
        "gateway": {"id": "gw", "site": "bench"},
        "uplink": {"mqtt": {"url": "mqtt://127.0.0.1:1"}},
        "devices": [{"name": "big", "driver": "modbus", "poll": "10s",
                     "connection": {"transport": "tcp", "host": "127.0.0.1", "port": 1},
                     "tags": [{"name": f"t{i}", "address": f"HR{i}"} for i in range(tags)]}],
    })


async def stall(run: Callable[[], asyncio.Future[Site] | Site]) -> tuple[float, float]:
    """(longest loop gap, wall time) while ``run`` validates."""
    gaps: list[float] = []
    done = False

    async def tick() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    result = run()
    if isinstance(result, asyncio.Future):
        await result
    took = time.perf_counter() - t0
    done = True
    await ticker
    return max(gaps), took


async def main(rounds: int) -> None:
    text = big_site()
    variants: dict[str, Callable[[], asyncio.Future[Site] | Site]] = {
        "on the loop (old SIGHUP)": lambda: parse_site(text),
        "thread (old config.apply)": lambda: asyncio.ensure_future(
            asyncio.to_thread(parse_site, text)),
        "thread, GC paused": lambda: asyncio.ensure_future(
            asyncio.to_thread(load_registered, lambda: parse_site(text))),
        "forked child (SIGHUP now)": lambda: asyncio.ensure_future(
            asyncio.to_thread(load_registered, lambda: off_process(lambda: parse_site(text)))),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():  # interleaved: machine load hits all alike
            results[name].append(await stall(run))
    base = statistics.median(g for g, _ in results["on the loop (old SIGHUP)"])
    print(f"10,000-tag site, {rounds} rounds, medians")
    print(f"{'variant':28} {'max loop stall':>15} {'vs on-loop':>10} {'validation':>11}")
    for name, rows in results.items():
        gap = statistics.median(g for g, _ in rows)
        took = statistics.median(t for _, t in rows)
        print(f"{name:28} {gap * 1000:12.0f} ms {gap / base:10.2f} {took:9.2f} s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
