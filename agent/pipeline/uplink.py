"""The MQTT uplink: one session to the broker for data, state and commands.

Sending is driven by the buffer, never by the scheduler: a batch leaves the
buffer only when the broker has acknowledged it (QoS 1 PUBACK).  After a
(re)connect two cursors run over the buffer: *backlog* (batches stored
before the connect, oldest first) and *live* (batches committed since).
They share the in-flight window, so live data keeps flowing while a backlog
drains, and each stream stays in ``seq`` order.

Which broker of a list and which MQTT version: ``brokers``; what a cloud
changes (topics, retain, credentials, pacing): ``profiles``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
from paho.mqtt.properties import Properties

from agent.config.model import GatewayConfig, MqttConfig
from agent.pipeline.brokers import V5, Endpoint, Rotation
from agent.pipeline.buffer import Buffer, StoredBatch
from agent.pipeline.encoders.json import JsonEncoder
from agent.pipeline.pacing import Pacer
from agent.pipeline.profiles import make_profile
from agent.pipeline.sparkplug.context import NodeContext
from agent.sdk.backoff import Backoff
from agent.sdk.counters import UplinkCounters

__all__ = ["Handler", "Uplink"]

log = logging.getLogger("agent.uplink")

Handler = Callable[[aiomqtt.Message], Awaitable[None]]


class _Renewal(Exception):
    """The session reached its credential's lifetime: reconnect with a fresh one."""


class Uplink:
    def __init__(
        self,
        *,
        mqtt: MqttConfig,
        gateway: GatewayConfig,
        buffer: Buffer,
        state: Callable[[str], dict[str, Any]],
        counters: UplinkCounters | None = None,
    ) -> None:
        self.mqtt = mqtt
        self.gateway = gateway
        self.buffer = buffer
        self.state = state
        self.counters = counters or UplinkCounters()
        self.base = f"{mqtt.topic_prefix}/{gateway.site}/{gateway.id}"
        self.encoder = JsonEncoder(gateway.id)
        # The buffer packs batches so that our envelope still fits max_message.
        buffer.envelope = self._overhead
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._handlers: list[tuple[str, Handler]] = []
        self._handler_tasks: set[asyncio.Task[None]] = set()
        #: Called after every successful connect (e.g. to publish metrics at once).
        self.on_connect: list[Callable[[], Awaitable[None]]] = []
        self.heartbeat: Callable[[], None] = lambda: None
        self._session_task: asyncio.Task[None] | None = None
        self._reconfiguring = False
        self._wake = asyncio.Event()
        self._session_ok = False
        self.profile = make_profile(mqtt, gateway)
        self.rotation = Rotation(mqtt)
        #: The broker of the current (or last) session: in the state message.
        self.endpoint: Endpoint = self.rotation.current
        #: Set by the Agent; with ``format: sparkplug_b`` the data goes out as a
        #: Sparkplug B edge node (agent.pipeline.sparkplug) in this same session.
        self.node_context: NodeContext | None = None
        self.node: Any = None  # SparkplugNode, imported (with protobuf) only when used

    def _sparkplug(self) -> Any:
        """The Sparkplug node for the current settings, or None for JSON."""
        if self.mqtt.format != "sparkplug_b" or self.node_context is None:
            return None
        if self.node is None:
            from agent.pipeline.sparkplug.node import SparkplugNode

            self.node = SparkplugNode(self.node_context, buffer=self.buffer,
                                      counters=self.counters)
        self.node.configure(self.mqtt, self.gateway)
        return self.node

    def topic(self, suffix: str) -> str:
        return f"{self.base}/{suffix}"

    def subscribe(self, suffix: str, handler: Handler) -> None:
        """Handle messages on ``{base}/{suffix}`` (a filter: ``cmd/+``).

        Register before ``run()``; messages are handled concurrently.  The
        filter follows the gateway's topic base when ``reconfigure()`` moves it.
        """
        self._handlers.append((suffix, handler))

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> bool:
        """Publish if connected; False when the link is down or the publish failed."""
        client = self._client
        if client is None:
            return False
        data = payload.encode() if isinstance(payload, str) else payload
        out = self.profile.outgoing(topic, data, retain)
        if out is None:  # the cloud would refuse it (the profile logged why)
            return False
        topic, data, retain = out
        try:
            if self.profile.pacer is not None:
                await self.profile.pacer.acquire(len(data) + len(topic), Pacer.LIVE)
            await client.publish(topic, data, qos=qos, retain=retain, properties=properties)
        except aiomqtt.MqttError as err:
            log.debug("publish to %s failed: %s", topic, err)
            return False
        return True

    def state_message(self, status: str) -> str:
        """The state payload: the agent's view plus the broker in use."""
        return json.dumps({**self.state(status), "broker": self.endpoint.url})

    async def publish_state(self) -> None:
        await self.publish(self.topic("state"), self.state_message("online"), retain=True)

    def _client_args(self, endpoint: Endpoint) -> dict[str, Any]:
        m = self.mqtt
        node = self._sparkplug()
        # One will per session: a Sparkplug node's is its NDEATH (bdSeq + 1 per attempt).
        will = node.will() if node is not None else aiomqtt.Will(
            self.topic("state"), self.state_message("offline"), qos=1, retain=True)
        return self.profile.client_args({
            **self.rotation.client_args(endpoint, m),
            "username": m.username,
            "password": m.password.get_secret_value() if m.password else None,
            "identifier": m.client_id or self.gateway.id,
            "will": will if self.profile.has_will else None,
            "keepalive": int(m.keepalive),
            # With other nodes to try, a node that accepts TCP but does not
            # answer CONNECT (a NATS node re-electing its JetStream leaders)
            # is given up after 10 s; _connect_and_serve restores the longer
            # timeout for the session's operations.
            "timeout": 10.0 if len(self.rotation.endpoints) > 1 else max(10.0, m.keepalive),
            "max_inflight_messages": m.max_inflight + 8,
            # Replies and PUBACKs are small packets: without TCP_NODELAY each
            # can wait for a delayed ACK (40 ms on Linux).
            "socket_options": ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        })

    def reconfigure(self, mqtt: MqttConfig, gateway: GatewayConfig) -> None:
        """Switch broker/credentials/topics: the session ends and reconnects at once."""
        self.mqtt = mqtt
        self.gateway = gateway
        self.base = f"{mqtt.topic_prefix}/{gateway.site}/{gateway.id}"
        self.encoder = JsonEncoder(gateway.id)
        self.profile = make_profile(mqtt, gateway)
        self.rotation.reconfigure(mqtt)
        self.endpoint = self.rotation.current
        # Publishes from now on must not go through the ending session: they
        # would wait the whole client timeout for a PUBACK that never comes.
        self._client = None
        if self._session_task is not None and not self._session_task.done():
            self._reconfiguring = True
            self._session_task.cancel()
        else:
            self._wake.set()  # waiting out a backoff: try the new settings now

    async def run(self) -> None:
        """Connect, send, reconnect with backoff; forever (until cancelled)."""
        backoff = Backoff(1.0, self.mqtt.reconnect_max)
        failing = False
        while True:
            self._session_ok = False
            was_up = False
            self._session_task = asyncio.create_task(self._connect_and_serve(),
                                                     name="uplink-session")
            try:
                await self._session_task
                raise aiomqtt.MqttError("session ended")
            except asyncio.CancelledError:
                # Only the session was cancelled (reconfigure) if we ourselves
                # are not being cancelled: a stop must never be swallowed.
                me = asyncio.current_task()
                if not self._reconfiguring or (me is not None and me.cancelling()):
                    raise
                self._reconfiguring = False
                log.info("uplink: reconnecting with new settings to %s", self.rotation.current)
                backoff = Backoff(1.0, self.mqtt.reconnect_max)
                continue
            except _Renewal:
                log.info("uplink: reconnecting to %s to renew credentials", self.endpoint)
                continue
            except Exception as err:  # the link is retried, never given up
                # A reconfigure racing a session that failed on its own: the
                # new settings are already in place for the next attempt.
                self._reconfiguring = False
                was_up = self._session_ok
                if was_up:  # it was up: a new outage starts
                    backoff.reset()
                    failing = False
                if not isinstance(err, aiomqtt.MqttError):
                    log.exception("uplink session failed unexpectedly")
                self.counters.errors += 1
                self.counters.last_error = str(err)
                if not failing:
                    log.error("uplink down: %s: %s", self.endpoint, err)
                    failing = True
                else:
                    log.debug("uplink still down: %s: %s", self.endpoint, err)
            finally:
                self._client = None
                self.connected.clear()
                self.counters.connected = False
            delay = self._retry_delay(backoff, was_up)
            # The heartbeat keeps beating while we wait: a broker outage is not a hang.
            deadline = asyncio.get_running_loop().time() + delay
            self._wake.clear()
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                self.heartbeat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(left, 1.0))
                if self._wake.is_set():
                    backoff = Backoff(1.0, self.mqtt.reconnect_max)
                    break

    def _retry_delay(self, backoff: Backoff, was_up: bool) -> float:
        """Seconds before the next attempt; moves along the broker list."""
        if was_up:
            # The first reconnect after a lost link: to the next node, after a
            # random share of the spread (a fleet must not return in one second).
            self.rotation.lost()
            if self.mqtt.spread > 0:
                return random.uniform(0, self.mqtt.spread)
            return 0.0 if len(self.rotation.endpoints) > 1 else backoff.next()
        # Next node at once; the backoff applies once per failed round.
        return backoff.next() if self.rotation.failed() else 0.0

    async def _connect_and_serve(self) -> None:
        endpoint = self.endpoint = self.rotation.current
        while True:
            try:
                async with aiomqtt.Client(**self._client_args(endpoint)) as client:
                    client.timeout = max(10.0, self.mqtt.keepalive)
                    self._client = client
                    self._session_ok = True
                    self.rotation.established()
                    self.counters.connected = True
                    self.counters.reconnects += 1
                    log.info("uplink up: %s (MQTT %s)", endpoint,
                             "5" if self.rotation.version(endpoint) == V5 else "3.1.1")
                    await self._session(client)
                return
            except aiomqtt.MqttError as err:
                if self._session_ok or not self.rotation.fall_back(endpoint, err):
                    raise

    async def _session(self, client: aiomqtt.Client) -> None:
        node = self._sparkplug()
        for suffix, _ in self._handlers:
            await client.subscribe(self.profile.filter(suffix), qos=1)
        if node is not None:
            await node.subscribe(client)
        online = self.profile.outgoing(self.topic("state"), self.state_message("online").encode(),
                                       True)
        if online is not None:
            await client.publish(online[0], online[1], qos=1, retain=online[2])
        self.connected.set()
        for hook in self.on_connect:
            await hook()
        lifetime = self.profile.session_lifetime()
        try:
            async with asyncio.timeout(lifetime), asyncio.TaskGroup() as tg:
                tg.create_task(self._send_loop(client) if node is None
                               else node.serve(client, self.heartbeat), name="uplink-send")
                tg.create_task(self._receive_loop(client), name="uplink-receive")
        except* aiomqtt.MqttError as group:
            raise group.exceptions[0] from None
        except* TimeoutError:
            if lifetime is None:
                raise
            raise _Renewal from None

    async def _receive_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if self.node is not None and self.node.handles(message):
                continue
            for suffix, handler in self._handlers:
                if message.topic.matches(self.profile.filter(suffix)):
                    task = asyncio.create_task(self._handle(handler, message))
                    self._handler_tasks.add(task)
                    task.add_done_callback(self._handler_tasks.discard)

    async def _handle(self, handler: Handler, message: aiomqtt.Message) -> None:
        try:
            await handler(message)
        except Exception:
            log.exception("handler for %s failed", message.topic)

    def _overhead(self, device: str) -> int:
        return self.encoder.overhead(device)

    async def _send_one(self, client: aiomqtt.Client, batch: StoredBatch,
                        priority: int = Pacer.LIVE) -> None:
        props = {"gateway": self.gateway.id, "device": batch.device, "seq": str(batch.seq)}
        out = self.profile.outgoing(self.topic(f"data/{batch.device}"),
                                    self.encoder.encode(batch), False, props)
        assert out is not None, "profiles never drop data (the buffer keeps to max_message)"
        if self.profile.pacer is not None:
            await self.profile.pacer.acquire(len(out[1]) + len(out[0]), priority)
        self.counters.sent += 1
        await client.publish(out[0], out[1], qos=1, retain=out[2])
        self.counters.acked += 1
        self.buffer.ack(batch.seq)

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        window = self.mqtt.max_inflight
        boundary = await self.buffer.max_seq()  # stored before this connect: backlog
        backlog_cursor = 0
        live_cursor = boundary
        inflight: set[asyncio.Task[None]] = set()
        try:
            while True:
                self.heartbeat()
                # Cleared before fetching, so a commit racing the fetch still wakes us.
                self.buffer.committed.clear()
                for task in [t for t in inflight if t.done()]:
                    inflight.discard(task)
                    task.result()  # a failed publish ends the session -> reconnect
                free = window - len(inflight)
                if free > 0:
                    # Live first, but never more than half the window while a
                    # backlog remains, so both make progress.
                    live = await self.buffer.fetch(live_cursor, max(1, free // 2)
                                                   if backlog_cursor < boundary else free)
                    if live:
                        live_cursor = live[-1].seq
                    old: list[StoredBatch] = []
                    if backlog_cursor < boundary and free - len(live) > 0:
                        old = await self.buffer.fetch(backlog_cursor, free - len(live), boundary)
                        backlog_cursor = old[-1].seq if old else boundary
                    for batch in old:
                        inflight.add(asyncio.create_task(
                            self._send_one(client, batch, Pacer.BACKLOG)))
                    for batch in live:
                        inflight.add(asyncio.create_task(self._send_one(client, batch)))
                    if old or live:
                        continue
                # Nothing to send, or the window is full: wait for either.
                waiters: set[asyncio.Future[Any]] = set(inflight)
                commit_wait = None
                if len(inflight) < window:
                    commit_wait = asyncio.ensure_future(self.buffer.committed.wait())
                    waiters.add(commit_wait)
                try:
                    done, _ = await asyncio.wait(waiters, timeout=1.0,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if commit_wait is not None:
                        commit_wait.cancel()
                for finished in done & inflight:
                    inflight.discard(finished)
                    finished.result()  # a failed publish ends the session -> reconnect
        finally:
            for task in inflight:
                task.cancel()
