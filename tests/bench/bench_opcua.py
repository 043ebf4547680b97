# asyncua annotates its constructors with NewTypes (ua.Int16, ua.String, ...) and
# re-exports without __all__; plain ints/strs are what it takes at run time.
# mypy: disable-error-code="arg-type, attr-defined, method-assign, call-overload"
"""OPC UA driver benchmark: poll CPU, subscribe throughput, restart recovery.

Run: .venv/bin/python tests/bench/bench_opcua.py [--rounds 5] [--nodes 1000]

The asyncua server runs in a subprocess, so the CPU measured here is the
agent side only (this process).  Baselines are measured in the same run:

1. Poll: CPU per scan of 1,000 nodes through ``OpcuaDriver.read`` against
   asyncua's own ``Client.read_values`` of the same nodes (which hides bad
   statuses, the reason the driver does not use it).  Then a real 1 s
   period for a few scans: agent CPU in % of one core (target < 20 %).
2. Subscribe: the server changes every node every 100 ms (10,000 changes/s
   offered); changes delivered per second to the driver's ``emit`` and the
   agent CPU per 1,000 changes, against asyncua's high-level
   ``Subscription`` with a ``datachange_notification`` handler.
   Target: 5,000 changes/s.
3. Recovery: the server is killed and restarted after 2 s (and once more
   after ``--long-outage`` s); time from the restarted server answering to
   the first new value, with the core's own scheduler
   (``agent.pipeline.scheduler.DeviceRunner``: backoff 1 s doubling, capped).
   Target: within 5 s.
Medians over rounds; the machine is shared, so ratios matter most.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asyncua import ua
from asyncua.client.client import Client

from agent.sdk.counters import DeviceCounters
from agent.sdk.driver import DriverContext
from agent.sdk.readings import Sample
from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.options import OpcuaDevice
from drivers.opcua.simulator import free_port

NS = "urn:edge-agent:bench"
ROOT = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent("""
    import asyncio, sys, time
    from datetime import UTC, datetime
    from asyncua import ua
    from drivers.opcua.simulator import start_server

    async def main(port, n, period):
        sim = await start_server(port, namespaces=[sys.argv[4]],
                                 variables={f"v{i}": (ua.VariantType.Double, 0.0) for i in range(n)})
        print("READY", flush=True)
        ids = [sim.nodes[f"v{i}"].nodeid for i in range(n)]
        write = sim.server.iserver.write_attribute_value
        tick = 0
        while True:
            await asyncio.sleep(period if period > 0 else 3600)
            if period > 0:
                tick += 1
                now = datetime.now(UTC)
                for i, nid in enumerate(ids):
                    await write(nid, ua.DataValue(ua.Variant(float(tick + i), ua.VariantType.Double),
                                                  SourceTimestamp=now, ServerTimestamp=now))

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
""")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class ServerProcess:
    def __init__(self, port: int, nodes: int, period: float) -> None:
        self.args = [sys.executable, "-c", SERVER, str(port), str(nodes), str(period), NS]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> float:
        """Start; return the monotonic time the server answered (printed READY)."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        assert line.startswith(b"READY"), line
        return time.monotonic()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


def config(port: int, nodes: int, mode: str, interval: str) -> OpcuaDevice:
    return OpcuaDevice.model_validate({
        "name": "bench", "driver": "opcua", "mode": mode, "interval": interval,
        "connection": {"endpoint": f"opc.tcp://127.0.0.1:{port}/", "timeout": "10s"},
        "tags": [{"name": f"v{i}", "node": f"nsu={NS};s=v{i}"} for i in range(nodes)]})


def context(tmp: Path) -> DriverContext:
    return DriverContext(state_dir=tmp, counters=DeviceCounters(), log=logging.getLogger("bench"))


async def bench_poll(port: int, nodes: int, rounds: int, tmp: Path) -> dict[str, float]:
    scans = 20
    drv = OpcuaDriver(config(port, nodes, "poll", "1s"), context(tmp))
    await drv.connect()
    client = Client(f"opc.tcp://127.0.0.1:{port}/", timeout=10)
    await client.connect()
    ns = await client.get_namespace_index(NS)
    raw_nodes = [client.get_node(ua.NodeId(f"v{i}", ns)) for i in range(nodes)]
    ours, theirs = [], []
    for _ in range(rounds):
        t0 = cpu()
        for _ in range(scans):
            sample = await drv.read()
        ours.append((cpu() - t0) / scans)
        assert len(sample.values) == nodes and not sample.bad
        t0 = cpu()
        for _ in range(scans):
            values = await client.read_values(raw_nodes)
        theirs.append((cpu() - t0) / scans)
        assert len(values) == nodes
    await client.disconnect()
    # The real thing: a 1 s period, wall-clock aligned like the scheduler.
    periods = 5
    t0, w0 = cpu(), time.monotonic()
    next_tick = time.time()
    for _ in range(periods):
        await asyncio.sleep(max(0.0, next_tick - time.time()))
        await drv.read()
        next_tick += 1.0
    await asyncio.sleep(max(0.0, next_tick - time.time()))
    real_pct = (cpu() - t0) / (time.monotonic() - w0) * 100
    await drv.close()
    return {"driver_ms_per_scan": statistics.median(ours) * 1000,
            "read_values_ms_per_scan": statistics.median(theirs) * 1000,
            "cpu_pct_at_1s": real_pct}


class _Handler:
    def __init__(self) -> None:
        self.count = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.count += 1


async def _measure(counter: Any, seconds: float) -> tuple[float, float]:
    start_n, t0, w0 = counter(), cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    n, dt = counter() - start_n, time.monotonic() - w0
    return n / dt, (cpu() - t0) / max(n, 1) * 1000 * 1000  # changes/s, CPU ms per 1000 changes


async def bench_subscribe(port: int, nodes: int, rounds: int, tmp: Path) -> dict[str, float]:
    seconds = 3.0
    got = [0]

    def emit(samples: list[Sample]) -> None:
        got[0] += sum(len(s.values) for s in samples)

    drv = OpcuaDriver(config(port, nodes, "subscribe", "100ms"), context(tmp))
    await drv.connect()
    task = asyncio.create_task(drv.stream(emit))
    while got[0] < nodes:  # initial values in
        await asyncio.sleep(0.1)
    ours = [await _measure(lambda: got[0], seconds) for _ in range(rounds)]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await drv.close()

    client = Client(f"opc.tcp://127.0.0.1:{port}/", timeout=10)
    await client.connect()
    ns = await client.get_namespace_index(NS)
    handler = _Handler()
    sub = await client.create_subscription(100, handler)
    await sub.subscribe_data_change([client.get_node(ua.NodeId(f"v{i}", ns))
                                     for i in range(nodes)], sampling_interval=100)
    while handler.count < nodes:
        await asyncio.sleep(0.1)
    theirs = [await _measure(lambda: handler.count, seconds) for _ in range(rounds)]
    await sub.delete()
    await client.disconnect()
    return {"driver_changes_per_s": statistics.median(r for r, _ in ours),
            "driver_cpu_ms_per_1000": statistics.median(c for _, c in ours),
            "asyncua_changes_per_s": statistics.median(r for r, _ in theirs),
            "asyncua_cpu_ms_per_1000": statistics.median(c for _, c in theirs)}


async def bench_recovery(rounds: int, tmp: Path, outage: float) -> list[float]:
    from agent.config.plugins import load_plugins
    from agent.pipeline.scheduler import DeviceRunner

    port = free_port()
    server = ServerProcess(port, 10, 0.1)
    await server.start()
    last: list[float] = [0.0]

    def sink(device: str, samples: list[Sample]) -> None:
        if any(not s.bad for s in samples):
            last[0] = time.monotonic()

    plugin = load_plugins()["opcua"]
    assert not isinstance(plugin, Exception)
    runner = DeviceRunner(config(port, 10, "subscribe", "100ms"), plugin, state_dir=tmp,
                          shared={}, sink=sink)
    task = asyncio.create_task(runner.run())
    out = []
    try:
        for _ in range(rounds):
            while time.monotonic() - last[0] > 0.5:
                await asyncio.sleep(0.05)
            await server.kill()
            await asyncio.sleep(outage)  # the driver notices and retries meanwhile
            answering = await server.start()
            while last[0] < answering:
                await asyncio.sleep(0.02)
            out.append(last[0] - answering)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.kill()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--long-outage", type=float, default=20.0,
                        help="also measure after an outage this long (0: skip)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        port = free_port()
        server = ServerProcess(port, args.nodes, 0)
        await server.start()
        try:
            poll = await bench_poll(port, args.nodes, args.rounds, tmp)
        finally:
            await server.kill()
        print(f"poll, {args.nodes} nodes per scan (median of {args.rounds} rounds x 20 scans):")
        print(f"  driver.read         {poll['driver_ms_per_scan']:7.1f} ms CPU per scan")
        print(f"  asyncua read_values {poll['read_values_ms_per_scan']:7.1f} ms CPU per scan "
              f"(baseline)   ratio {poll['driver_ms_per_scan'] / poll['read_values_ms_per_scan']:.2f}")
        print(f"  at a 1 s period: agent CPU {poll['cpu_pct_at_1s']:.1f} % of one core "
              f"(target < 20 %)")

        port = free_port()
        server = ServerProcess(port, args.nodes, 0.1)
        await server.start()
        try:
            sub = await bench_subscribe(port, args.nodes, args.rounds, tmp)
        finally:
            await server.kill()
        print(f"subscribe, {args.nodes} nodes changing every 100 ms (median of {args.rounds} x 3 s):")
        print(f"  driver emit        {sub['driver_changes_per_s']:8.0f} changes/s, "
              f"{sub['driver_cpu_ms_per_1000']:6.1f} ms CPU per 1000 changes")
        print(f"  asyncua handler    {sub['asyncua_changes_per_s']:8.0f} changes/s, "
              f"{sub['asyncua_cpu_ms_per_1000']:6.1f} ms CPU per 1000 changes (baseline)  ratio "
              f"{sub['driver_cpu_ms_per_1000'] / sub['asyncua_cpu_ms_per_1000']:.2f}")
        print("  target: 5000 changes/s")

        for outage, rounds in ((2.0, args.rounds), (args.long_outage, 2)):
            if outage <= 0:
                continue
            rec = await bench_recovery(rounds, tmp, outage)
            print(f"recovery after a {outage:g} s server outage ({rounds} restarts, "
                  "core DeviceRunner):")
            print(f"  median {statistics.median(rec):.2f} s, max {max(rec):.2f} s after the server "
                  f"answered (target < 5 s); all: {', '.join(f'{r:.2f}' for r in rec)}")


if __name__ == "__main__":
    asyncio.run(main())
