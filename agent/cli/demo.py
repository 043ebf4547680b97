"""``edge-agent demo``: simulated devices, the real agent, a live view.

The simulators come from the ``edge_agent.simulators`` entry points (one per
driver), so the demo grows with the drivers and the core names none.  The
agent publishes to the broker when one answers and buffers otherwise, which
shows store-and-forward at work: start or stop the broker while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from agent.config.load import ConfigErrors, parse_site
from agent.runtime.logs import setup_logging
from agent.sdk.readings import Sample

__all__ = ["run_demo"]

SIMULATORS_GROUP = "edge_agent.simulators"
log = logging.getLogger("agent.demo")


async def _start_simulators(stack: contextlib.AsyncExitStack, workdir: Path) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = []
    for ep in sorted(entry_points(group=SIMULATORS_GROUP), key=lambda e: e.name):
        try:
            simulate = ep.load()
            devices.extend(await simulate(stack, workdir))
        except Exception as err:
            print(f"demo: the {ep.name} simulator is unavailable: {type(err).__name__}: {err}",
                  file=sys.stderr)
    return devices


def _site_text(devices: list[dict[str, Any]], broker: str) -> str:
    site = {
        "gateway": {"id": "demo-gw", "site": "demo"},
        "uplink": {"mqtt": {"url": broker, "client_id": f"edge-demo-{os.getpid()}",
                            "topic_prefix": "m2m", "reconnect_max": "5s"}},
        "buffer": {"max_size": "64MB", "max_age": "1d", "commit_interval": "500ms"},
        "management": {"metrics_interval": "10s"},
        "devices": devices,
    }
    return yaml.safe_dump(site, sort_keys=False)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return json.dumps(value)


class LastValues:
    """Last value (or error) of every tag: push devices send only what changed."""

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, tuple[Any, str | None]]] = {}

    def __call__(self, device: str, samples: list[Sample]) -> None:
        tags = self.tags.setdefault(device, {})
        for sample in samples:
            for tag, value in sample.values.items():
                tags[tag] = (value, sample.bad.get(tag))


def _view(agent: Any, started: float, last: LastValues) -> str:
    link = agent.uplink.counters
    stats = agent.buffer.stats
    lines = [
        f"edge-agent demo  {time.strftime('%H:%M:%S')}  (running {time.monotonic() - started:.0f} s;"
        " Ctrl-C stops)",
        f"uplink {agent.site.config.uplink.mqtt.url}: {'UP' if link.connected else 'DOWN'}"
        f"  sent {link.sent}  acked {link.acked}",
        f"buffer: {stats.batches} batches waiting ({stats.bytes} bytes), "
        f"{stats.committed_samples} samples committed, {stats.dropped_samples} dropped",
    ]
    for name, runner in sorted(agent.scheduler.runners.items()):
        c = runner.counters
        state = "up" if c.connected else f"DOWN ({c.last_error})"
        lines.append(f"  {name} [{runner.config.driver}] {state}  polls {c.polls}  "
                     f"errors {c.errors}")
        for tag, (value, error) in last.tags.get(name, {}).items():
            mark = f"  BAD {error}" if error else ""
            lines.append(f"      {tag:<14} {_format_value(value)}{mark}")
    return "\n".join(lines)


async def _demo(duration: float | None, broker: str, workdir: Path) -> int:
    from agent.runtime.agent import Agent

    async with contextlib.AsyncExitStack() as stack:
        devices = await _start_simulators(stack, workdir)
        if not devices:
            print("demo: no simulator could start", file=sys.stderr)
            return 1
        text = _site_text(devices, broker)
        (workdir / "site.yaml").write_text(text)
        try:
            site = parse_site(text, str(workdir / "site.yaml"))
        except ConfigErrors as err:
            print(f"demo: the generated site file is invalid (a bug):\n{err.render()}",
                  file=sys.stderr)
            return 1
        print(f"demo: site file {workdir / 'site.yaml'}, state in {workdir / 'state'}")
        agent = Agent(site, workdir / "state")
        last = LastValues()
        agent.observers.append(last)
        run = asyncio.create_task(agent.run())
        started = time.monotonic()
        tty = sys.stdout.isatty()
        try:
            while not run.done():
                await asyncio.wait({run}, timeout=1.0)
                view = _view(agent, started, last)
                print(("\x1b[H\x1b[2J" if tty else "\n") + view, flush=True)
                if duration is not None and time.monotonic() - started >= duration:
                    agent.stop()
                    await run
        finally:
            agent.stop()
            await asyncio.gather(run, return_exceptions=True)
    return 0


def run_demo(*, duration: float | None, broker: str, workdir: str | None) -> int:
    setup_logging("warning")
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="edge-demo-")))
        else:
            work = Path(workdir)
            work.mkdir(parents=True, exist_ok=True)
        try:
            return asyncio.run(_demo(duration, broker, work))
        except KeyboardInterrupt:
            return 0
    return 0
