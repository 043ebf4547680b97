"""Read-to-subscriber latency, peak memory, CPU and flash wear of a loaded agent.

Run: .venv/bin/python tests/bench/bench_latency.py [--seconds 30] [--devices 10]
         [--tags 1000] [--poll 100ms] [--strace] [--reloads N]

The shape of issue 16's run: a pymodbus simulator (its own process), a
private Mosquitto, and ``edge-agent run`` polling DEVICES x TAGS registers
every POLL through the durable buffer. A subscriber in this process stamps
every sample on arrival; lag is arrival minus the sample's ``ts`` (the
moment of the read). Reported against baselines measured in the same run:
a bare interpreter's RSS, and the broker round trip of a plain QoS 1
publish of a message of the same size.

- peak RSS: the kernel's high-water mark (VmHWM) of the agent process;
- CPU: user + system seconds of the agent over the measured window;
- fsyncs/s: ``strace -c -e fsync,fdatasync`` on the agent (``--strace``;
  strace itself slows those calls a little), and bytes written from
  /proc/PID/io.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conftest import Broker

ROOT = Path(__file__).resolve().parents[2]


def _proc_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def serve_sim(port_file: str, tags: int, machines: int) -> None:
    """Child mode: one simulated machine (own TCP port) per device, values changing every 100 ms.

    One port per device, as on a shop floor: devices behind one endpoint
    share one connection and queue on it, which would measure the bus, not
    the pipeline.
    """
    from drivers.modbus.simserver import SimServer

    async def run() -> None:
        sims = [await SimServer.tcp({1: {"hr": [(0, tags)]}}) for _ in range(machines)]
        Path(port_file).write_text(" ".join(str(sim.port) for sim in sims))
        n = 0
        while True:
            n += 1
            for sim in sims:
                sim.set_registers(1, "hr", 0, [(n + i) & 0xFFFF for i in range(tags)])
            await asyncio.sleep(0.1)

    asyncio.run(run())


async def plain_round_trip(broker: Broker, size: int, count: int = 200) -> list[float]:
    """Baseline: publish->subscriber latency of a bare QoS 1 publish (ms)."""
    body = b"x" * size
    lags: list[float] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-sub-plain") as sub, \
            aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-pub-plain") as pub:
        await sub.subscribe("plain/#", qos=1)
        for _ in range(count):
            sent = time.perf_counter()
            await pub.publish("plain/x", body, qos=1)
            async for _msg in sub.messages:
                lags.append((time.perf_counter() - sent) * 1000)
                break
            await asyncio.sleep(0.01)
    return lags


async def main(a: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(work)
        broker.start()
        port_file = work / "sim.port"
        sim = subprocess.Popen([sys.executable, __file__, "--serve-sim", str(port_file),
                                "--tags", str(a.tags), "--devices",
                                str(1 if a.one_endpoint else a.devices)])
        agent: subprocess.Popen[bytes] | None = None
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline:
                    raise SystemExit("simulator did not start")
                await asyncio.sleep(0.1)
            ports = [int(p) for p in port_file.read_text().split()]
            if a.one_endpoint:
                ports = [ports[0]] * a.devices
            devices = [{
                "name": f"press-{i}", "driver": "modbus", "poll": a.poll,
                "connection": {"transport": "tcp", "host": "127.0.0.1", "port": ports[i], "unit": 1,
                               "timeout": "2s"},
                "tags": [{"name": f"r{j}", "address": f"HR{j}", "type": "uint16"}
                         for j in range(a.tags)],
            } for i in range(a.devices)]
            site = work / "site.yaml"
            site.write_text(yaml.safe_dump({
                "gateway": {"id": "gw-bench", "site": "b"},
                "uplink": {"mqtt": {"url": broker.url}}, "devices": devices}))
            bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "-c", str(site), "--state-dir",
                 str(work / "state")], cwd=ROOT, stderr=subprocess.DEVNULL)
            lags: list[float] = []
            readings = 0
            sizes: list[int] = []
            measuring = False

            async def subscribe() -> None:
                nonlocal readings
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-sub") as c:
                    await c.subscribe("m2m/b/gw-bench/data/#", qos=1)
                    async for msg in c.messages:
                        now = time.time() * 1000
                        if not measuring:
                            continue
                        body = msg.payload if isinstance(msg.payload, bytes) else b""
                        sizes.append(len(body))
                        for s in json.loads(body)["samples"]:
                            lags.append(now - s["ts"])
                            readings += len(s["values"])

            sub = asyncio.create_task(subscribe())
            await asyncio.sleep(a.warmup)
            proc = psutil.Process(agent.pid)
            tracer = None
            if a.strace:
                tracer = subprocess.Popen(
                    ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-p", str(agent.pid)],
                    stderr=subprocess.PIPE, text=True)
            cpu0 = sum(proc.cpu_times()[:2])
            wb0 = _write_bytes(agent.pid)
            measuring = True
            t0 = time.monotonic()
            await asyncio.sleep(a.seconds)
            measuring = False
            elapsed = time.monotonic() - t0
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            written = _write_bytes(agent.pid) - wb0
            fsyncs = None
            if tracer is not None:
                tracer.send_signal(2)
                _, err = tracer.communicate(timeout=30)
                fsyncs = sum(int(m.group(1)) for m in
                             re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?f(?:data)?sync",
                                         err, re.M))
            hwm = _proc_kb(agent.pid, "VmHWM") / 1024
            rss_now = _proc_kb(agent.pid, "VmRSS") / 1024
            bare_rss = _proc_kb(bare.pid, "VmRSS") / 1024
            sub.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub
            plain = await plain_round_trip(broker, int(statistics.median(sizes)) if sizes else 1000)
            bare.kill()
            expected = a.devices * a.tags * elapsed / _seconds(a.poll)
            print(f"site: {a.devices} devices x {a.tags} tags every {a.poll}; measured {elapsed:.0f} s")
            print(f"delivered {readings / elapsed:,.0f} readings/s of {expected / elapsed:,.0f} expected")
            if lags:
                q = statistics.quantiles(lags, n=100)
                print(f"lag read->subscriber: avg {statistics.fmean(lags):.0f} ms, p50 {q[49]:.0f}, "
                      f"p99 {q[98]:.0f}, max {max(lags):.0f} ms")
            print(f"baseline plain QoS 1 round trip ({int(statistics.median(sizes)) if sizes else 0} B):"
                  f" median {statistics.median(plain):.1f} ms, max {max(plain):.1f} ms")
            print(f"peak RSS {hwm:.1f} MB, at the end {rss_now:.1f} MB "
                  f"(bare interpreter {bare_rss:.1f} MB)")
            if readings:
                print(f"CPU {cpu:.2f} s = {cpu / readings * 1e6:.2f} CPU-s per million readings "
                      f"({cpu / elapsed * 100:.2f} % of one core)")
            print(f"disk: {written / elapsed / 1024:.0f} KB/s written"
                  + (f", {fsyncs / elapsed:.1f} fsyncs/s" if fsyncs is not None else ""))
            median_size = statistics.median(sizes) if sizes else 0
            print(f"messages: {len(sizes) / elapsed:.1f}/s, median {median_size:.0f} B")
            for n in range(1, a.reloads + 1):
                # One device changed (its timeout), the others as they were: a
                # reload must restart that one and keep no second copy of the rest.
                devices[0]["connection"]["timeout"] = f"{2 + n}s"
                site.write_text(yaml.safe_dump({
                    "gateway": {"id": "gw-bench", "site": "b"},
                    "uplink": {"mqtt": {"url": broker.url}}, "devices": devices}))
                agent.send_signal(signal.SIGHUP)
                await asyncio.sleep(a.warmup)
                print(f"after SIGHUP {n} (device press-0 changed): RSS "
                      f"{_proc_kb(agent.pid, 'VmRSS') / 1024:.1f} MB, peak "
                      f"{_proc_kb(agent.pid, 'VmHWM') / 1024:.1f} MB")
        finally:
            if agent is not None:
                agent.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    agent.wait(30)
            sim.kill()
            broker.stop()


def _seconds(text: str) -> float:
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    return float(text.rstrip("s"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve-sim")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=8)
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--poll", default="100ms")
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--reloads", type=int, default=0,
                    help="then SIGHUP this many times, one device changed each time")
    ap.add_argument("--one-endpoint", action="store_true",
                    help="all devices behind one simulator port (they share one connection)")
    args = ap.parse_args()
    if args.serve_sim:
        serve_sim(args.serve_sim, args.tags, args.devices)
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        # `timeout` or a Ctrl-C must still run the cleanup that stops the
        # agent and the simulator: a stray agent skews every later run.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        asyncio.run(main(args))
