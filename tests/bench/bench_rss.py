"""Resident memory and CPU of a running agent on a Modbus-only site.

Run: .venv/bin/python tests/bench/bench_rss.py [--seconds 20] [--tags 100]

Starts the Modbus simulator in this process, a private Mosquitto, and
`edge-agent run` as a child polling N tags at 1 s (10 devices); reports the
child's RSS and CPU per million readings against a bare Python interpreter
(the baseline, same run). tests/core/test_examples.py proves such a site
never imports asyncua or pyserial.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drivers.modbus.simulator import simulate
from tests.conftest import Broker


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def main(seconds: float, tags_per_device: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(work)
        broker.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                base = (await simulate(stack, work))[0]
                devices = []
                for i in range(10):
                    d = dict(base, name=f"press-{i}", poll="1s")
                    d["tags"] = [{"name": f"r{j}", "address": f"HR{j}", "type": "uint16"}
                                 for j in range(tags_per_device)]
                    devices.append(d)
                site = work / "site.yaml"
                site.write_text(yaml.safe_dump({
                    "gateway": {"id": "gw-bench", "site": "b"},
                    "uplink": {"mqtt": {"url": broker.url}}, "devices": devices}))
                bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                agent = subprocess.Popen(
                    [sys.executable, "-m", "agent.cli.main", "run", "-c", str(site), "--state-dir",
                     str(work / "state")], stderr=subprocess.DEVNULL)
                try:
                    await asyncio.sleep(5)  # start-up, not measured
                    proc = psutil.Process(agent.pid)
                    cpu0 = sum(proc.cpu_times()[:2])
                    await asyncio.sleep(seconds)
                    cpu = sum(proc.cpu_times()[:2]) - cpu0
                    readings = 10 * tags_per_device * seconds
                    print(f"agent RSS {rss_mb(agent.pid):.1f} MB vs bare python "
                          f"{rss_mb(bare.pid):.1f} MB")
                    print(f"agent CPU {cpu:.2f} s over {seconds:.0f} s for {readings:,.0f} readings"
                          f" = {cpu / readings * 1e6:.1f} CPU s per million readings "
                          f"({cpu / seconds * 100:.1f} % of one core)")
                finally:
                    # Also on SIGTERM (`timeout`) or Ctrl-C: a stray agent skews later runs.
                    agent.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        agent.wait(20)
                    bare.kill()
        finally:
            broker.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--tags", type=int, default=100)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main(a.seconds, a.tags))
