"""What a site file costs the agent's memory: in-process validation against the forked child.

Run: .venv/bin/python tests/bench/bench_site_memory.py [--tags 10000 50000]

Each variant runs in a fresh interpreter that has imported the loader and
the plugins (the baseline, printed), then loads a Modbus site of N tags over
10 devices: ``in-process`` (``load_site``, what ``check`` does and what start-up
did), ``forked`` (``ConfigStore.load_site``: ``agent.config.offload``, start-up
and SIGHUP now).  Reported: RSS and the high-water mark added, per tag, and
the wall time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import sys, time
from pathlib import Path
from agent.config.load import load_site
from agent.config.plugins import load_plugins
from agent.config.store import ConfigStore

def mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0

load_plugins()
rss0, hwm0 = mb("VmRSS"), mb("VmHWM")
t0 = time.perf_counter()
if sys.argv[1] == "forked":
    site = ConfigStore(Path(sys.argv[3]), Path(sys.argv[2])).load_site()
else:
    site = load_site(sys.argv[2])
took = time.perf_counter() - t0
print(rss0, mb("VmRSS") - rss0, mb("VmHWM") - hwm0, took)
"""


def site_text(tags: int) -> str:
    per = tags // 10
    return yaml.safe_dump({
        "gateway": {"id": "gw", "site": "bench"},
        "uplink": {"mqtt": {"url": "mqtt://127.0.0.1:1"}},
        "devices": [{"name": f"press-{i}", "driver": "modbus", "poll": "100ms",
                     "connection": {"transport": "tcp", "host": "127.0.0.1", "port": 5020 + i},
                     "tags": [{"name": f"p{i}r{j}", "address": f"HR{j}", "type": "uint16"}
                              for j in range(per)]} for i in range(10)]})


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'tags':>7} {'variant':11} {'imports':>8} {'+RSS':>8} {'+peak':>8} "
              f"{'per tag':>8} {'time':>7}")
        for tags in sizes:
            path = Path(tmp) / f"site-{tags}.yaml"
            path.write_text(site_text(tags))
            for variant in ("in-process", "forked"):
                out = subprocess.run([sys.executable, "-c", _CHILD, variant, str(path), tmp],
                                     cwd=ROOT, capture_output=True, text=True, check=True)
                base, rss, peak, took = (float(x) for x in out.stdout.split())
                print(f"{tags:7,} {variant:11} {base:6.1f}MB {rss:6.1f}MB {peak:6.1f}MB "
                      f"{rss * 2**20 / tags:6.0f} B {took:5.2f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", type=int, nargs="+", default=[10_000, 50_000])
    main(ap.parse_args().tags)
