"""Management benchmark: ``ping`` round trip while the agent polls 10,000 tags/s.

Run: .venv/bin/python tests/bench/bench_management.py [--pings 300] [--devices 20]

Three processes besides this one, as on a gateway: a Mosquitto on a free
port, a Modbus TCP simulator (4 servers), and ``edge-agent run``.  This
process is the operator: it sends signed-less ``ping`` commands with the
same client the ``edge-agent remote`` CLI uses and measures the round trip
(publish -> gateway -> reply on the MQTT 5 response topic).

1. Baseline: the agent with no devices (same broker, same process).
2. Load: ``config.apply`` pushes 20 devices x 100 registers polled every
   200 ms (10,000 tags/s); the achieved rate is computed from the agent's
   own ``metrics`` (poll counters).  Pings again.
3. Apply with one changed device out of 20: the other 19 must show no
   missed poll (``overruns``) and no restart.

Each part runs twice: with Mosquitto's default config, where Nagle's
algorithm on the broker's sockets holds a small packet back until the
previous one is acknowledged (Linux delays ACKs up to 40 ms), and with
``set_tcp_nodelay true`` (EMQX, HiveMQ and the cloud brokers send at once).
The agent and the CLI set TCP_NODELAY on their own sockets.

Target (issue 7): ping median and p95 under 50 ms under load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.cli.remote.client import BrokerOptions, RemoteClient  # noqa: E402 - after the path fix
from tests.conftest import Broker  # noqa: E402

SIM = """
import asyncio, logging, sys
logging.disable(logging.CRITICAL)
from drivers.modbus.simserver import SimServer
async def main(n):
    sims = [await SimServer.tcp({1: {"hr": [(0, 200)]}}) for _ in range(n)]
    for s in sims:
        s.set_registers(1, "hr", 0, list(range(200)))
    print(" ".join(str(s.port) for s in sims), flush=True)
    await asyncio.Event().wait()
asyncio.run(main(int(sys.argv[1])))
"""


def site(url: str, devices: list[dict[str, Any]]) -> str:
    return yaml.safe_dump({
        "gateway": {"id": "gw-bench", "site": "bench"},
        "uplink": {"mqtt": {"url": url, "reconnect_max": "1s"}},
        "buffer": {"commit_interval": "200ms"},
        "management": {"metrics_interval": "1s", "command_rate": 1000},
        "log_level": "warning",
        "devices": devices,
    })


def devices(ports: list[int], n: int, tags: int, poll: str) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        out.append({
            "name": f"dev-{i:02d}", "driver": "modbus", "poll": poll,
            "connection": {"transport": "tcp", "host": "127.0.0.1",
                           "port": ports[i % len(ports)], "unit": 1, "timeout": "1s"},
            "tags": [{"name": f"t{j}", "address": f"HR{j}"} for j in range(tags)],
        })
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def pings(rc: RemoteClient, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = await rc.call("ping", wait=10)
        out.append((time.perf_counter() - t0) * 1000)
        assert reply["ok"], reply
        await asyncio.sleep(0.01)  # spread the pings over poll cycles
    return out


class Metrics:
    """The agent's own metrics messages, newest last."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    async def run(self, broker: Broker) -> None:
        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.subscribe("m2m/bench/gw-bench/metrics")
            async for m in c.messages:
                if isinstance(m.payload, bytes):
                    self.items.append(json.loads(m.payload))

    async def wait_new(self, after_ts: int, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.items and self.items[-1]["ts"] > after_ts:
                return self.items[-1]
            await asyncio.sleep(0.05)
        raise TimeoutError("no metrics")


def tags_per_s(a: dict[str, Any], b: dict[str, Any], tags: int) -> float:
    polls = sum(d["polls"] for d in b["devices"].values()) - sum(
        a["devices"].get(n, {}).get("polls", 0) for n in b["devices"])
    return float(polls * tags / ((b["ts"] - a["ts"]) / 1000))


async def one_run(args: argparse.Namespace, nodelay: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-mgmt-"))
    broker = Broker(work, extra_conf="set_tcp_nodelay true\n" if nodelay else "")
    broker.start()
    sim = subprocess.Popen([sys.executable, "-c", SIM, "4"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
    agent: subprocess.Popen[bytes] | None = None
    metrics = Metrics()
    mtask = asyncio.create_task(metrics.run(broker))
    try:
        assert sim.stdout is not None
        ports = [int(p) for p in sim.stdout.readline().split()]
        site_file = work / "site.yaml"
        site_file.write_text(site(broker.url, []))
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent.cli.main", "run", "-c", str(site_file),
             "--state-dir", str(work / "state")], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=open(work / "agent.log", "wb"))
        async with RemoteClient(BrokerOptions(url=broker.url), site="bench",
                                gateway="gw-bench") as rc:
            for _ in range(100):
                with contextlib.suppress(Exception):
                    if (await rc.call("ping", wait=1))["ok"]:
                        break
            await pings(rc, 20)  # warm-up
            idle = await pings(rc, args.pings)

            tags = 10_000 // 5 // args.devices  # 5 polls/s per device
            load = devices(ports, args.devices, tags, "200ms")
            reply = await rc.call("config.apply", {"yaml": site(broker.url, load)}, wait=30)
            assert reply["ok"], reply
            m0 = await metrics.wait_new(int(time.time() * 1000) + 2000)  # let them settle
            busy = await pings(rc, args.pings)
            m1 = await metrics.wait_new(m0["ts"] + 3000)

            # One changed device out of 20: the others keep their cadence.
            changed = [dict(d) for d in load]
            changed[7] = {**changed[7], "tags": changed[7]["tags"][: tags // 2]}
            before = await metrics.wait_new(m1["ts"])
            t0 = time.perf_counter()
            reply = await rc.call("config.apply", {"yaml": site(broker.url, changed)}, wait=30)
            apply_ms = (time.perf_counter() - t0) * 1000
            assert reply["ok"], reply
            after = await metrics.wait_new(before["ts"] + 4000)
            missed = {n: after["devices"][n]["overruns"] - before["devices"][n]["overruns"]
                      for n in before["devices"] if n != "dev-07"}
            await rc.call("restart", wait=10)
    finally:
        mtask.cancel()
        await asyncio.gather(mtask, return_exceptions=True)
        if agent is not None:
            agent.terminate()
            agent.wait(20)
        sim.terminate()
        sim.wait(10)
        broker.stop()
    return {"idle": idle, "busy": busy, "rate": tags_per_s(m0, m1, tags), "apply_ms": apply_ms,
            "missed": missed}


def line(name: str, values: list[float]) -> str:
    return (f"  {name:<26} median {statistics.median(values):6.2f} ms   "
            f"p95 {pct(values, 0.95):6.2f} ms   max {max(values):6.2f} ms")


async def main(args: argparse.Namespace) -> None:
    configs = {"default": [False], "nodelay": [True], "both": [False, True]}[args.broker]
    for nodelay in configs:
        r = await one_run(args, nodelay)
        idle, busy = r["idle"], r["busy"]
        name = "set_tcp_nodelay true" if nodelay else "default config (Nagle on)"
        print(f"ping round trip, {args.pings} pings each; Mosquitto {name}:")
        print(line("baseline (no devices)", idle))
        print(line(f"polling {r['rate']:,.0f} tags/s", busy))
        print(f"  ratio loaded/baseline: median x"
              f"{statistics.median(busy) / statistics.median(idle):.2f}, "
              f"p95 x{pct(busy, 0.95) / pct(idle, 0.95):.2f}")
        ok = pct(busy, 0.95) < 50 and statistics.median(busy) < 50 and r["rate"] >= 9_500
        print(f"  target ping < 50 ms (median and p95) at 10,000 tags/s: "
              f"{'met' if ok else 'NOT met'}")
        missed = r["missed"]
        print(f"  apply with 1 of {args.devices} devices changed: reply in "
              f"{r['apply_ms']:.0f} ms; missed polls of the other {len(missed)}: "
              f"{sum(missed.values())} ({'met' if not any(missed.values()) else 'NOT met'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--broker", choices=["default", "nodelay", "both"], default="both",
                        help="Mosquitto with its default config, with set_tcp_nodelay, or both")
    asyncio.run(main(parser.parse_args()))
