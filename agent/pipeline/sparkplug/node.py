"""The Sparkplug B edge node inside the uplink's MQTT session.

Per connect attempt: bdSeq + 1 (persisted) and a fresh will, the NDEATH
with that bdSeq (QoS 1, not retained). Per session: subscribe NCMD, DCMD
(and the primary host's STATE) first; wait for the host when one is
configured; then NBIRTH (seq 0) and one DBIRTH per device, then data.

``seq`` (0-255, wrapping) is given to a payload at the moment its publish
is started, and publishes start in the order they were requested (one
task each, FIFO), so the wire order is the seq order; a birth sequence is
requested without a suspension point in between, so nothing slips into it.

A stored batch is acked to the buffer only once the broker acknowledged
every DDATA built from it (QoS 1; the specification asks QoS 0 for data,
which would lose what the broker never got). After the births, batches
stored before them are history: replayed as separate DDATA payloads with
``is_historical`` metrics, behind the live data in the in-flight window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from agent.config.model import GatewayConfig, MqttConfig
from agent.pipeline.buffer import Buffer, StoredBatch
from agent.pipeline.encoders.sparkplug.encode import (
    birth_payload,
    death_payload,
    decode,
    drops_payload,
    metric_value,
    node_metrics,
)
from agent.pipeline.sparkplug.bdseq import BdSeqStore
from agent.pipeline.sparkplug.context import NodeContext
from agent.pipeline.sparkplug.devices import AliasTable, DeviceModel, split
from agent.pipeline.sparkplug.host import HostState
from agent.pipeline.writes import guarded_write
from agent.sdk.counters import UplinkCounters
from agent.sdk.driver import DriverError
from agent.sdk.readings import now_ms

__all__ = ["HostOffline", "SparkplugNode"]

log = logging.getLogger("agent.sparkplug")

NAMESPACE = "spBv1.0"
#: A rebirth is made this long after the request that asked for it; the
#: requests arriving meanwhile share it (a host that asks ten times in a
#: second gets one rebirth), and none is ever ignored.
REBIRTH_WINDOW = 1.0
#: Devices are checked (up/down, config changes) at most this often, and
#: always before a batch of a device not born yet is sent.
SYNC_EVERY = 0.2
#: Longest wait for a DCMD write before it counts as failed.
WRITE_TIMEOUT = 10.0


def _retrieve(task: asyncio.Task[None]) -> None:
    # Fire-and-forget publishes (births, read-backs): a failure ends the
    # session through the receive loop; do not warn "never retrieved".
    if not task.cancelled():
        task.exception()


class HostOffline(aiomqtt.MqttError):
    """The primary host went offline: NDEATH sent; reconnect (bdSeq + 1) and wait."""


class SparkplugNode:
    def __init__(self, ctx: NodeContext, *, buffer: Buffer, counters: UplinkCounters) -> None:
        self.ctx = ctx
        self.buffer = buffer
        self.counters = counters
        self.bdseq = BdSeqStore(Path(ctx.state_dir) / "sparkplug_bdseq")
        self.aliases = AliasTable()
        # Shared with the uplink's counters: the metrics message and /api/status show them.
        self.stats = counters.sparkplug
        self.stats.update({
            "births": 0, "rebirth_requests": 0, "rebirths": 0, "dcmd_writes": 0,
            "dcmd_refused": 0, "bad_commands": 0, "history_batches": 0, "unborn_batches": 0,
        })
        self.group = self.edge_node = ""
        self.host: HostState | None = None
        self.max_message = 128 * 1024
        self.window = 16
        self.data_qos = 1
        self.seq = 0
        self._client: aiomqtt.Client | None = None
        self._born: dict[str, DeviceModel] = {}
        self._dead = True
        self._rebirth_at: float | None = None  # monotonic time of the pending rebirth
        self._wake = asyncio.Event()
        self._inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue(maxsize=1000)
        self._writes: set[asyncio.Task[None]] = set()
        self._dropped = (0, 0)
        self._synced = 0.0

    # -- settings and topics -------------------------------------------
    def configure(self, mqtt: MqttConfig, gateway: GatewayConfig) -> None:
        sp = mqtt.sparkplug
        self.group = (sp.group if sp else None) or gateway.site
        self.edge_node = (sp.edge_node if sp else None) or gateway.id
        host = sp.primary_host if sp else None
        if host is None:
            self.host = None
        elif self.host is None or self.host.host != host:
            self.host = HostState(host)
        self.max_message = mqtt.max_message
        self.window = mqtt.max_inflight
        self.data_qos = sp.data_qos if sp else 1

    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group}/{kind}/{self.edge_node}"
        return base if device is None else f"{base}/{device}"

    def will(self) -> aiomqtt.Will:
        """The NDEATH of the connect about to be made; bdSeq goes up first."""
        bd = self.bdseq.next()
        payload = death_payload(bd_seq=bd, ts=now_ms()).SerializeToString()
        return aiomqtt.Will(self.topic("NDEATH"), payload, qos=1, retain=False)

    # -- inbound -------------------------------------------------------
    async def subscribe(self, client: aiomqtt.Client) -> None:
        """Before any birth: commands, and the primary host's STATE."""
        await client.subscribe(self.topic("NCMD"), qos=1)
        await client.subscribe(self.topic("DCMD") + "/+", qos=1)
        if self.host is not None:
            await client.subscribe(f"{NAMESPACE}/STATE/{self.host.host}", qos=1)

    def handles(self, message: aiomqtt.Message) -> bool:
        """Take a message of the node's topics (queued for the session); False for others."""
        topic = str(message.topic)
        if not topic.startswith(f"{NAMESPACE}/"):
            return False
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            self.stats["bad_commands"] += 1
            log.warning("sparkplug: commands arrive faster than handled; %s dropped", topic)
        return True

    # -- outbound ------------------------------------------------------
    def _emit(self, topic: str, payload: Any, *, qos: int = 0,
              seq: bool = True) -> asyncio.Task[None]:
        """Start one publish now; its seq is the next one (see the module note)."""
        assert self._client is not None
        if seq:
            payload.seq = self.seq
            self.seq = (self.seq + 1) % 256
        data = payload.SerializeToString()
        task = asyncio.create_task(self._client.publish(topic, data, qos=qos, retain=False))
        task.add_done_callback(_retrieve)
        return task

    def _births(self) -> None:
        """NBIRTH (seq 0) and every device's DBIRTH, requested back to back."""
        now = now_ms()
        self.seq = 0
        bd = self.bdseq.current if self.bdseq.current is not None else 0
        self._dropped = self._drops()
        self._emit(self.topic("NBIRTH"),
                   birth_payload(node_metrics(bd, now, self._dropped), seq=0, ts=now))
        self._born = {}
        for config in self.ctx.devices():
            if self._ready(config.name):
                self._birth_device(DeviceModel(config, self.aliases, self.ctx.latest(config.name)))
        self._dead = False
        self._rebirth_at = None
        self.stats["births"] += 1

    def _drops(self) -> tuple[int, int]:
        s = self.buffer.stats
        return s.dropped_batches, s.dropped_samples + s.pending_dropped_samples

    def _report_drops(self) -> None:
        """NDATA when the buffer dropped batches since it was last said."""
        dropped = self._drops()
        if dropped != self._dropped:
            self._dropped = dropped
            self._emit(self.topic("NDATA"), drops_payload(dropped, now_ms()), qos=self.data_qos)

    def _ready(self, name: str) -> bool:
        # Born once read (its DBIRTH carries real values) and while up; a
        # batch is committed only after the reading reached the tag cache,
        # so a device is always born before its first DDATA.
        return self.ctx.device_up(name) and bool(self.ctx.latest(name))

    def _birth_device(self, model: DeviceModel) -> None:
        payload = model.birth(self.ctx.latest(model.name), seq=0, now=now_ms())
        size = payload.ByteSize()
        if size > self.max_message:
            # The site check refuses such a file; a value (a long string) can still grow it.
            log.error("sparkplug: DBIRTH of %s is %d bytes, over max_message %d: not born",
                      model.name, size, self.max_message)
            return
        self._emit(self.topic("DBIRTH", model.name), payload)
        self._born[model.name] = model

    def _death_device(self, name: str) -> None:
        self._born.pop(name, None)
        self._emit(self.topic("DDEATH", name), death_payload(bd_seq=None, ts=now_ms()))

    def _sync_devices(self) -> None:
        """DBIRTH for devices added or back; DDEATH for devices gone or down; both for changes."""
        self._synced = time.monotonic()
        wanted = {c.name: c for c in self.ctx.devices()}
        for name in [n for n in self._born if n not in wanted]:
            self._death_device(name)
        for name, config in wanted.items():
            model = self._born.get(name)
            up = self.ctx.device_up(name)
            changed = model is not None and model.config is not config and model.config != config
            if model is not None and (not up or changed or model.needs_rebirth):
                self._death_device(name)
                model = None
            if model is None and up and self._ready(name):
                self._birth_device(DeviceModel(config, self.aliases, self.ctx.latest(name)))

    # -- the session ---------------------------------------------------
    async def serve(self, client: aiomqtt.Client, heartbeat: Callable[[], None]) -> None:
        self._client = client
        self._dead = True
        # The window's publishes plus a birth sequence are pending by design:
        # not a reason for aiomqtt's "pending publish calls" warning.
        client.pending_calls_threshold = self.window * 4 + 2 * len(self.ctx.devices()) + 16
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._inbound(), name="sparkplug-inbound")
                tg.create_task(self._outbound(heartbeat), name="sparkplug-outbound")
        except* aiomqtt.MqttError as group:
            raise group.exceptions[0] from None
        finally:
            if not self._dead:
                # A clean end (stop, reconfigure): NDEATH, then aiomqtt's DISCONNECT.
                await self._ndeath()
            for task in self._writes:
                task.cancel()
            self._client = None

    async def _ndeath(self) -> None:
        self._dead = True
        bd = self.bdseq.current if self.bdseq.current is not None else 0
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._emit(self.topic("NDEATH"), death_payload(bd_seq=bd, ts=now_ms()),
                                 qos=1, seq=False)

    async def _wait_for_host(self, heartbeat: Callable[[], None]) -> None:
        while self.host is not None and not self.host.online:
            heartbeat()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _outbound(self, heartbeat: Callable[[], None]) -> None:
        await self._wait_for_host(heartbeat)
        self._births()
        # Stored before the births: history.
        boundary = await self.buffer.max_seq()
        history = 0
        live = boundary
        inflight: set[asyncio.Task[None]] = set()
        historic: weakref.WeakSet[asyncio.Task[None]] = weakref.WeakSet()
        try:
            while True:
                heartbeat()
                self.buffer.committed.clear()
                if self._rebirth_at is not None and time.monotonic() >= self._rebirth_at:
                    self._births()
                    self.stats["rebirths"] += 1
                else:
                    if time.monotonic() - self._synced >= SYNC_EVERY:
                        self._sync_devices()
                        self._report_drops()
                for task in [t for t in inflight if t.done()]:
                    inflight.discard(task)
                    task.result()  # a failed publish ends the session -> reconnect
                free = self.window - len(inflight)
                if free > 0:
                    # Live first; history gets what is left, at most half the window.
                    fresh = await self.buffer.fetch(live, max(1, free // 2)
                                                    if history < boundary else free)
                    if fresh:
                        live = fresh[-1].seq
                    old: list[StoredBatch] = []
                    replaying = sum(1 for t in inflight if t in historic)
                    if (history < boundary and free - len(fresh) > 0
                            and replaying < max(1, self.window // 2)):
                        # One stored batch of history per round, and at most half the
                        # window: encoding runs on the event loop and big history
                        # payloads queue on the socket, so live batches need both.
                        old = await self.buffer.fetch(history, 1, boundary)
                        history = old[-1].seq if old else boundary
                    for batch in fresh:
                        inflight.add(self._send_batch(batch, historical=False))
                    spent = time.perf_counter()
                    for batch in old:
                        task = self._send_batch(batch, historical=True)
                        inflight.add(task)
                        historic.add(task)
                    if old and not fresh:
                        # Pace history at half the loop's time: after encoding a
                        # batch, leave as long again to a live commit (woken at once).
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.buffer.committed.wait(),
                                                   time.perf_counter() - spent)
                    if fresh or old:
                        continue
                waiters: set[asyncio.Future[Any]] = set(inflight)
                wakers = [asyncio.ensure_future(self._wake.wait())]
                if len(inflight) < self.window:
                    wakers.append(asyncio.ensure_future(self.buffer.committed.wait()))
                try:
                    timeout = 1.0 if self._rebirth_at is None else max(
                        0.0, min(1.0, self._rebirth_at - time.monotonic()))
                    done, _ = await asyncio.wait(waiters | set(wakers), timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in wakers:
                        w.cancel()
                self._wake.clear()
                for finished in done & inflight:
                    inflight.discard(finished)
                    finished.result()
        finally:
            for task in inflight:
                task.cancel()

    def _send_batch(self, batch: StoredBatch, *, historical: bool) -> asyncio.Task[None]:
        model = self._born.get(batch.device)
        if model is None:
            # A device added or back since the last look: born before its data.
            self._sync_devices()
            model = self._born.get(batch.device)
        tasks: list[asyncio.Task[None]] = []
        if model is None:
            # The device is dead (its DDEATH said so) or gone: its stored
            # readings are bad placeholders or of a removed device.
            self.stats["unborn_batches"] += 1
        else:
            payload, count = model.data(batch.samples_json, now=now_ms(), historical=historical)
            if model.needs_rebirth:
                # A tag without a declared type changed type: say so before its value.
                self._death_device(model.name)
                self._birth_device(DeviceModel(model.config, self.aliases,
                                               self.ctx.latest(model.name)))
            if historical:
                self.stats["history_batches"] += 1
            if count:
                for part in split(payload, self.max_message):
                    tasks.append(self._emit(self.topic("DDATA", batch.device), part,
                                            qos=self.data_qos))
        return asyncio.create_task(self._acked(batch.seq, tasks))

    async def _acked(self, seq: int, tasks: list[asyncio.Task[None]]) -> None:
        self.counters.sent += 1
        for task in tasks:
            await task
        self.counters.acked += 1
        self.buffer.ack(seq)

    # -- commands and STATE --------------------------------------------
    async def _inbound(self) -> None:
        while True:
            message = await self._inbox.get()
            topic = str(message.topic)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                if self.host is not None and topic == f"{NAMESPACE}/STATE/{self.host.host}":
                    await self._on_state(payload)
                elif topic == self.topic("NCMD"):
                    self._on_ncmd(decode(payload))
                elif topic.startswith(self.topic("DCMD") + "/"):
                    device = topic.rsplit("/", 1)[1]
                    task = asyncio.create_task(self._on_dcmd(device, decode(payload)))
                    self._writes.add(task)
                    task.add_done_callback(self._writes.discard)
            except ValueError as err:
                self.stats["bad_commands"] += 1
                log.warning("sparkplug: %s ignored: %s", topic, err)

    async def _on_state(self, payload: bytes) -> None:
        assert self.host is not None
        was = self.host.online
        online = self.host.update(payload)
        if online is None:
            return
        if online and not was:
            log.info("sparkplug: primary host %s online", self.host.host)
            self._wake.set()
        elif not online and was:
            log.warning("sparkplug: primary host %s offline: NDEATH, reconnecting", self.host.host)
            if not self._dead:
                await self._ndeath()
            raise HostOffline(f"primary host {self.host.host} went offline")

    def _on_ncmd(self, payload: Any) -> None:
        for metric in payload.metrics:
            name = metric.name or {1: "Node Control/Rebirth", 2: "Node Control/Reboot"}.get(
                metric.alias, "")
            if metric_value(metric) is not True:
                continue
            if name == "Node Control/Rebirth":
                self.stats["rebirth_requests"] += 1
                # Coalesced: requests while one is pending share it. Before the
                # first births (waiting for the host) the births will answer.
                if not self._dead and self._rebirth_at is None:
                    self._rebirth_at = time.monotonic() + REBIRTH_WINDOW
            elif name == "Node Control/Reboot":
                log.warning("sparkplug: NCMD Node Control/Reboot: restarting the agent")
                self.ctx.restart()
            else:
                self.stats["bad_commands"] += 1
                log.warning("sparkplug: NCMD for unknown metric %r ignored", name)

    async def _on_dcmd(self, device: str, payload: Any) -> None:
        model = self._born.get(device)
        driver = self.ctx.driver(device)
        for metric in payload.metrics:
            tag = None
            if model is not None:
                tag = (model.by_alias.get(metric.alias) if metric.HasField("alias")
                       else model.tags.get(metric.name))
            if model is None or tag is None or driver is None:
                self.stats["dcmd_refused"] += 1
                log.warning("sparkplug: DCMD %s metric %s refused: no such born device or tag",
                            device, metric.name or metric.alias)
                continue
            value = metric_value(metric, tag.datatype)
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    read_back = await guarded_write(driver, tag.name, value,
                                                    origin=f"sparkplug:DCMD:{self.group}")
            except (DriverError, TimeoutError) as err:
                # guarded_write has audited the refusal; nothing was changed.
                self.stats["dcmd_refused"] += 1
                log.warning("sparkplug: DCMD %s.%s=%r refused: %s", device, tag.name, value,
                            err or "no answer in time")
                continue
            except Exception:  # a driver bug must not kill the command task
                self.stats["dcmd_refused"] += 1
                log.exception("sparkplug: DCMD %s.%s=%r failed", device, tag.name, value)
                continue
            self.stats["dcmd_writes"] += 1
            if self._born.get(device) is model and not self._dead and self._client is not None:
                self._emit(self.topic("DDATA", device), model.readback(tag, read_back, now=now_ms()),
                           qos=self.data_qos)
