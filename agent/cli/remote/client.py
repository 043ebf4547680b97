"""An MQTT 5 client that sends commands to one gateway and waits for the replies.

Each request carries a response topic under the gateway's own subtree
(``.../reply/<client>``, so a broker ACL that confines the gateway to its
subtree still lets it answer) and its id as correlation data.  Replies on
the plain ``.../reply`` topic are matched by id too, for gateways or tools
that ignore the response topic.

``protocol="auto"`` falls back to MQTT 3.1.1 when the broker refuses 5
(NATS, RabbitMQ before 3.13): requests then carry no response topic and the
gateway answers on ``.../reply``, matched by the request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.management.security import sign

__all__ = ["BrokerOptions", "RemoteClient", "RemoteTimeout", "gateway_states"]


class RemoteTimeout(Exception):
    """No reply within the timeout."""


@dataclass(frozen=True, kw_only=True)
class BrokerOptions:
    url: str
    username: str | None = None
    password: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    protocol: str = "auto"  # auto | 5 | 3.1.1

    def client_args(self, identifier: str, v311: bool = False) -> dict[str, Any]:
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker url {self.url!r}: use mqtt://host[:port] or mqtts://host[:port]")
        tls = None
        if parts.scheme == "mqtts":
            tls = aiomqtt.TLSParameters(ca_certs=self.ca, certfile=self.cert, keyfile=self.key,
                                        cert_reqs=ssl.CERT_REQUIRED,
                                        tls_version=ssl.PROTOCOL_TLS_CLIENT)
        return {
            "hostname": parts.hostname,
            "port": parts.port or (8883 if tls else 1883),
            "username": self.username,
            "password": self.password,
            "identifier": identifier,
            "protocol": aiomqtt.ProtocolVersion.V311 if v311 or self.protocol == "3.1.1"
            else aiomqtt.ProtocolVersion.V5,
            "tls_params": tls,
            "timeout": 10.0,
            # Small request/reply packets: without this, Nagle holds the command
            # back behind our own unacknowledged PUBACK (tens of ms per hop).
            "socket_options": ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        }


async def _connect(stack: contextlib.AsyncExitStack, broker: BrokerOptions,
                   identifier: str) -> tuple[aiomqtt.Client, bool]:
    """A connected client and whether it speaks MQTT 5 (auto: 3.1.1 if 5 is refused)."""
    from agent.pipeline.brokers import is_version_refused

    v5 = broker.protocol != "3.1.1"
    try:
        client = aiomqtt.Client(**broker.client_args(identifier, v311=not v5))
        return await stack.enter_async_context(client), v5
    except aiomqtt.MqttError as err:
        if not (v5 and broker.protocol == "auto" and is_version_refused(err)):
            raise
    client = aiomqtt.Client(**broker.client_args(identifier, v311=True))
    return await stack.enter_async_context(client), False


def _json(payload: Any) -> Any:
    try:
        return json.loads(payload if isinstance(payload, bytes | bytearray | str) else b"")
    except ValueError:
        return None


class RemoteClient:
    """``async with RemoteClient(...) as rc: reply = await rc.call("ping")``."""

    def __init__(self, broker: BrokerOptions, *, site: str, gateway: str,
                 prefix: str = "m2m", key: bytes | None = None) -> None:
        self.broker = broker
        self.base = f"{prefix}/{site}/{gateway}"
        self.key = key
        self.identifier = f"edge-remote-{uuid.uuid4().hex[:12]}"
        self.response_topic = f"{self.base}/reply/{self.identifier}"
        self._client: aiomqtt.Client | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self.v5 = True

    async def __aenter__(self) -> RemoteClient:
        client, self.v5 = await _connect(self._stack, self.broker, self.identifier)
        self._client = client
        if self.v5:
            await client.subscribe(self.response_topic, qos=1)
        await client.subscribe(f"{self.base}/reply", qos=1)
        self._reader = asyncio.create_task(self._read(client), name="remote-replies")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._stack.aclose()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            reply = _json(message.payload)
            if not isinstance(reply, dict):
                continue
            # Correlation data first: a reply to a malformed request has no id.
            corr = getattr(message.properties, "CorrelationData", None)
            rid = corr.decode(errors="replace") if isinstance(corr, bytes) else reply.get("id")
            future = self._waiting.get(rid) if isinstance(rid, str) else None
            if future is not None and not future.done():
                future.set_result(reply)

    def request(self, command: str, args: dict[str, Any] | None = None,
                rid: str | None = None) -> dict[str, Any]:
        """The request body, signed when a key is set.

        ``cmd`` names the command inside the signed body, so a captured
        signed request cannot be replayed on another command's topic.
        """
        req: dict[str, Any] = {"id": rid or uuid.uuid4().hex, "cmd": command, "args": args or {}}
        if self.key is not None:
            req["ts"] = int(time.time() * 1000)
            req["sig"] = sign(req, self.key)
        return req

    async def send_raw(self, command: str, payload: bytes | str, rid: str,
                       wait: float) -> dict[str, Any]:
        """Publish ``payload`` on ``cmd/{command}`` and wait for the reply with ``rid``."""
        assert self._client is not None, "use RemoteClient as an async context manager"
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = self.response_topic
            props.CorrelationData = rid.encode()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        try:
            await self._client.publish(f"{self.base}/cmd/{command}", payload, qos=1,
                                       properties=props)
            async with asyncio.timeout(wait):
                return await future
        except TimeoutError:
            raise RemoteTimeout(f"no reply from {self.base} to {command} within {wait:g} s") \
                from None
        finally:
            self._waiting.pop(rid, None)

    async def call(self, command: str, args: dict[str, Any] | None = None, *,
                   wait: float = 10.0) -> dict[str, Any]:
        """Send one command; the reply dict (``ok`` true or false), or RemoteTimeout."""
        req = self.request(command, args)
        return await self.send_raw(command, json.dumps(req, separators=(",", ":")), req["id"],
                                   wait)


async def gateway_states(broker: BrokerOptions, *, site: str, prefix: str = "m2m",
                         quiet: float = 0.5, wait: float = 10.0) -> dict[str, dict[str, Any]]:
    """The retained ``state`` of every gateway of ``site``, by gateway id.

    The broker sends retained messages right after the subscription; the
    collection ends once none has arrived for ``quiet`` seconds.
    """
    states: dict[str, dict[str, Any]] = {}
    identifier = f"edge-remote-{uuid.uuid4().hex[:12]}"
    async with contextlib.AsyncExitStack() as stack:
        client, _ = await _connect(stack, broker, identifier)
        await client.subscribe(f"{prefix}/{site}/+/state", qos=1)
        deadline = time.monotonic() + wait
        messages = client.messages.__aiter__()
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(messages.__anext__(), min(quiet, left))
            except TimeoutError:
                break
            state = _json(message.payload)
            if isinstance(state, dict):
                states[str(message.topic).split("/")[-2]] = state
            elif not message.payload:
                # An empty retained message clears a decommissioned gateway.
                states.pop(str(message.topic).split("/")[-2], None)
    return states
