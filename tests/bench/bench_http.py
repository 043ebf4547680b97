"""What the HTTP endpoint costs: RSS and CPU of an agent scraped every 5 s,
against the same agent without ``http:`` (the baseline), in the same run.

Run: .venv/bin/python tests/bench/bench_http.py [--seconds 60] [--rounds 3] [--tags 100]

Per round: a Modbus simulator (in this process), a private Mosquitto, and two
``edge-agent run`` children with the same 10 devices x N tags at 1 s: one
without ``http:``, one with it, whose ``/metrics`` this script fetches every
5 s (as Prometheus would) and whose ``/api/status`` once a minute (a page
left open refreshes every 5 s: ``--page`` scrapes that too).  Reports
medians over the rounds of RSS at the end and CPU over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drivers.modbus.simulator import simulate
from tests.conftest import Broker, free_port


def site(broker: Broker, base: dict[str, Any], tags: int, gw: str,
         http: dict[str, str] | None) -> str:
    devices = []
    for i in range(10):
        d = dict(base, name=f"press-{i}", poll="1s")
        d["tags"] = [{"name": f"r{j}", "address": f"HR{j}", "type": "uint16"} for j in range(tags)]
        devices.append(d)
    doc: dict[str, Any] = {"gateway": {"id": gw, "site": "b"},
                           "uplink": {"mqtt": {"url": broker.url}}, "devices": devices}
    if http:
        doc["http"] = http
    return yaml.safe_dump(doc)


def fetch(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - our own loopback URL
        r.read()
    return (time.perf_counter() - started) * 1000


async def one_round(seconds: float, tags: int, page: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(work)
        broker.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            async with contextlib.AsyncExitStack() as stack:
                base = (await simulate(stack, work))[0]
                port = free_port()
                for name, http in (("plain", None), ("http", {"listen": f"127.0.0.1:{port}"})):
                    path = work / f"{name}.yaml"
                    path.write_text(site(broker, base, tags, f"gw-{name}", http))
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "agent.cli.main", "run", "-c", str(path),
                         "--state-dir", str(work / name)], stderr=subprocess.DEVNULL))
                url = f"http://127.0.0.1:{port}"
                for _ in range(100):  # start-up, not measured
                    try:
                        await asyncio.to_thread(fetch, url + "/metrics")
                        break
                    except OSError:
                        await asyncio.sleep(0.2)
                await asyncio.sleep(3)
                ps = [psutil.Process(p.pid) for p in procs]
                cpu0 = [sum(p.cpu_times()[:2]) for p in ps]
                latencies: list[float] = []
                end = time.monotonic() + seconds
                n = 0
                while time.monotonic() < end:
                    latencies.append(await asyncio.to_thread(fetch, url + "/metrics"))
                    if page or n % 12 == 0:
                        await asyncio.to_thread(fetch, url + "/api/status")
                    n += 1
                    await asyncio.sleep(5)
                cpu = [sum(p.cpu_times()[:2]) - c for p, c in zip(ps, cpu0, strict=True)]
                rss = [p.memory_info().rss / 2**20 for p in ps]
                return {"plain_rss": rss[0], "http_rss": rss[1],
                        "plain_cpu": cpu[0] / seconds * 100, "http_cpu": cpu[1] / seconds * 100,
                        "scrape_ms": statistics.median(latencies)}
        finally:
            for p in procs:
                p.terminate()
                p.wait(20)
            broker.stop()


async def main(seconds: float, rounds: int, tags: int, page: bool) -> None:
    results = [await one_round(seconds, tags, page) for _ in range(rounds)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    print(f"{rounds} rounds x {seconds:.0f} s, 10 devices x {tags} tags at 1 s, /metrics every 5 s"
          + (" + /api/status every 5 s" if page else ""))
    print(f"RSS  without http {med('plain_rss'):.1f} MB, with http {med('http_rss'):.1f} MB "
          f"(+{med('http_rss') - med('plain_rss'):.1f} MB, x{med('http_rss') / med('plain_rss'):.3f})")
    print(f"CPU  without http {med('plain_cpu'):.2f} %, with http {med('http_cpu'):.2f} % of one core "
          f"(+{med('http_cpu') - med('plain_cpu'):.2f} points, "
          f"x{med('http_cpu') / med('plain_cpu'):.3f})")
    print(f"/metrics response median {med('scrape_ms'):.1f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tags", type=int, default=100)
    ap.add_argument("--page", action="store_true", help="also fetch /api/status every 5 s")
    a = ap.parse_args()
    asyncio.run(main(a.seconds, a.rounds, a.tags, a.page))
