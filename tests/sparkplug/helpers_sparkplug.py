"""Sparkplug test helpers: an in-process agent on a Modbus simulator, and a
subscriber that decodes every message with the GENERATED protobuf module
(never with the encoder under test)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from agent.config.load import parse_site
from agent.management import attach_management
from agent.pipeline.encoders.sparkplug import sparkplug_b_pb2 as pb
from agent.runtime.agent import Agent
from drivers.modbus.simserver import SimServer
from drivers.modbus.simulator import LAYOUT, TAGS, UNIT
from tests.conftest import Broker, async_wait_until

GROUP, NODE = "lab", "gw-sp"
DEVICE = "press"


@dataclass
class Msg:
    topic: str
    kind: str              # NBIRTH, DDATA, ... (STATE for host messages)
    device: str | None
    payload: Any           # a decoded pb.Payload (None for STATE / JSON)
    qos: int
    retain: bool
    at: float              # time.time() when received
    raw: bytes = b""

    def metric(self, name: str) -> Any:
        return next(m for m in self.payload.metrics if m.name == name)


def decode(data: bytes) -> Any:
    payload = pb.Payload()
    payload.ParseFromString(data)
    return payload


@dataclass
class SpCollector:
    """Subscribes to spBv1.0/# (and the JSON management topics) on the test broker."""

    broker: Broker
    topics: tuple[str, ...] = ("spBv1.0/#",)
    messages: list[Msg] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.broker.port,
                                          identifier=f"sp-col-{id(self)}") as c:
                    for t in self.topics:
                        await c.subscribe(t, qos=1)
                    self._ready.set()
                    async for m in c.messages:
                        data = m.payload if isinstance(m.payload, bytes) else b""
                        parts = str(m.topic).split("/")
                        payload = None
                        kind = parts[2] if len(parts) > 2 else ""
                        if parts[0] == "spBv1.0" and parts[1] != "STATE" and data:
                            payload = decode(data)
                        elif parts[0] == "spBv1.0":
                            kind = "STATE"
                        self.messages.append(Msg(str(m.topic), kind,
                                                 parts[4] if len(parts) > 4 else None, payload,
                                                 m.qos, bool(m.retain), time.time(), data))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def __aenter__(self) -> SpCollector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def of(self, kind: str, device: str | None = None) -> list[Msg]:
        return [m for m in self.messages if m.kind == kind
                and (device is None or m.device == device)]

    def node_messages(self) -> list[Msg]:
        """Everything the node published that carries a seq (not NDEATH, not STATE)."""
        return [m for m in self.messages
                if m.kind in ("NBIRTH", "NDATA", "DBIRTH", "DDATA", "DDEATH")]


def site_dict(url: str, devices: list[dict[str, Any]], *, sparkplug: dict[str, Any] | None = None,
              **mqtt: Any) -> dict[str, Any]:
    return {
        "gateway": {"id": NODE, "site": GROUP},
        "uplink": {"mqtt": {"url": url, "reconnect_max": "2s", "format": "sparkplug_b",
                            **({"sparkplug": sparkplug} if sparkplug else {}), **mqtt}},
        "buffer": {"commit_interval": "100ms"},
        "devices": devices,
    }


def press(port: int, name: str = DEVICE, poll: str = "100ms",
          extra_tags: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": name, "driver": "modbus", "poll": poll,
        "connection": {"transport": "tcp", "host": "127.0.0.1", "port": port, "unit": UNIT,
                       "timeout": "500ms"},
        "tags": [dict(t) for t in TAGS] + (extra_tags or []),
    }


async def start_sim(stack: contextlib.AsyncExitStack, port: int = 0,
                    count: bool = True) -> SimServer:
    """The press simulator; ``cycles`` counts up every 50 ms (so there is data to report)."""
    sim = await SimServer.tcp({UNIT: LAYOUT}, port=port)
    stack.push_async_callback(sim.stop)
    sim.set_registers(UNIT, "hr", 200, [250])
    sim.set_value(UNIT, "hr", 100, ">f", 61.5)

    async def count_cycles() -> None:
        n = 0
        while True:
            n += 1
            sim.set_value(UNIT, "hr", 102, ">I", n)
            await asyncio.sleep(0.05)

    if count:
        task = asyncio.create_task(count_cycles())

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        stack.push_async_callback(stop)
    return sim


@dataclass
class Running:
    agent: Agent
    task: asyncio.Task[None]
    state: Path
    site_path: Path


@contextlib.asynccontextmanager
async def running_agent(broker: Broker, tmp_path: Path, devices: list[dict[str, Any]],
                        **kw: Any) -> AsyncIterator[Running]:
    text = yaml.safe_dump(site_dict(broker.url, devices, **kw))
    site_path = tmp_path / "site.yaml"
    site_path.write_text(text)
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    agent = Agent(parse_site(text, str(site_path)), state)
    attach_management(agent, config_path=site_path)
    task = asyncio.create_task(agent.run())
    try:
        await async_wait_until(lambda: agent.uplink.connected.is_set() or task.done(), 30,
                               "uplink up")
        assert not task.done(), "the agent stopped at start-up"
        yield Running(agent, task, state, site_path)
    finally:
        agent.stop()
        done, _ = await asyncio.wait({task}, timeout=30)
        if not done:
            import sys
            for t in asyncio.all_tasks():
                t.print_stack(file=sys.stdout)
            raise AssertionError("the agent did not stop within 30 s")


async def publish(broker: Broker, topic: str, payload: bytes, *, retain: bool = False,
                  times: int = 1) -> None:
    """Publish ``times`` copies over one connection (a host's burst)."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"sp-pub-{time.time_ns()}") as c:
        for _ in range(times):
            await c.publish(topic, payload, qos=1, retain=retain)


def command(metrics: list[tuple[str | None, int | None, int, str, Any]]) -> bytes:
    """An NCMD/DCMD payload: (name, alias, datatype, value field, value) per metric."""
    payload = pb.Payload()
    payload.timestamp = int(time.time() * 1000)
    for name, alias, datatype, field_name, value in metrics:
        m = payload.metrics.add()
        if name is not None:
            m.name = name
        if alias is not None:
            m.alias = alias
        m.timestamp = payload.timestamp
        m.datatype = datatype
        setattr(m, field_name, value)
    return bytes(payload.SerializeToString())
