"""The dispatcher: one MQTT message on ``cmd/{command}`` in, exactly one reply out.

Each message runs as its own task (the uplink starts one per message), so a
slow device read never holds up ``ping`` or the polling.  The reply goes to
the request's MQTT 5 response topic with its correlation data when it has
them, else to ``.../reply``; an Azure IoT Hub direct method is answered on
its response topic (see ``direct_methods``).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.management.commands import COMMANDS
from agent.management.direct_methods import STATUS, parse_method, reply_topic
from agent.management.metrics_report import MetricsPublisher
from agent.management.protocol import (
    CommandError,
    Request,
    best_effort_id,
    error_reply,
    ok_reply,
    parse_request,
)
from agent.management.security import Guard
from agent.runtime.status import CpuSampler

if TYPE_CHECKING:
    from agent.config.site import Site
    from agent.runtime.control import AgentControl

__all__ = ["Call", "Management"]

log = logging.getLogger("agent.management")

# Commands too frequent to log at info (monitoring polls them).
_QUIET = {"ping", "status", "buffer.stats", "config.get"}


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def _guard_settings(site: Site) -> dict[str, Any]:
    m = site.config.management
    key = m.command_key.get_secret_value().encode() if m.command_key is not None else None
    return {"key": key, "window_s": m.command_window, "rate": m.command_rate}


class Call:
    """One request being handled: what handlers see, and how they answer early."""

    def __init__(self, mgmt: Management, request: Request, topic: str,
                 correlation: bytes | None) -> None:
        self.mgmt = mgmt
        self.request = request
        self.topic = topic
        self.correlation = correlation
        self.answered = False

    @property
    def command(self) -> str:
        return self.request.command

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def args(self) -> dict[str, Any]:
        return self.request.args

    async def answer(self, result: Any) -> None:
        """Send the ok reply now (before a restart or an uplink reconnect)."""
        self.answered = True
        await self.mgmt.send(self.topic, self.correlation, ok_reply(self.id, result))


class Management:
    def __init__(self, control: AgentControl) -> None:
        self.control = control
        self.guard = Guard(**_guard_settings(control.site))
        self.metrics = MetricsPublisher(control)
        # Its own CPU sampler: a `status` must not shorten the metrics' interval.
        self.status_cpu = CpuSampler()
        self._rate_refused = 0
        control.on_reload(self._on_reload)

    async def _on_reload(self, site: Site) -> None:
        self.guard.reconfigure(**_guard_settings(site))

    def _reply_route(self, message: aiomqtt.Message) -> tuple[str, bytes | None]:
        topic = self.control.topic("reply")
        props = message.properties
        wanted = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        if isinstance(wanted, str) and wanted:
            # A wildcard cannot be published to, and a reply into our own
            # command tree would come back as a command.
            if "+" in wanted or "#" in wanted or wanted.startswith(self.control.topic("cmd/")):
                log.warning("ignoring unusable response topic %r; replying on %s", wanted, topic)
            else:
                topic = wanted
        return topic, bytes(correlation) if isinstance(correlation, bytes | bytearray) else None

    async def send(self, topic: str, correlation: bytes | None, reply: dict[str, Any]) -> None:
        props = None
        if correlation is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation
        body = json.dumps(reply, separators=(",", ":"), default=str)
        # A direct method's answer carries its status in the topic.
        topic = topic.replace(STATUS, "200" if reply.get("ok") else "400")
        if not await self.control.publish(topic, body, qos=1, properties=props):
            log.warning("reply to %s (id %s) not sent: uplink down", topic, reply.get("id"))

    def _admit(self) -> None:
        if self.guard.rate_ok():
            if self._rate_refused:
                log.warning("rate limit: %d command(s) refused in the last burst",
                            self._rate_refused)
                self._rate_refused = 0
            return
        self._rate_refused += 1
        rate = self.control.site.config.management.command_rate
        raise CommandError(f"refused: rate limit ({rate:g} commands/s) exceeded; retry later",
                           rate_limited=True)

    async def handle(self, message: aiomqtt.Message) -> None:
        """The uplink handler for ``cmd/+``."""
        command = str(message.topic).rsplit("/", 1)[-1]
        payload = _payload_bytes(message.payload)
        topic, correlation = self._reply_route(message)
        method = parse_method(str(message.topic), payload)
        if method is not None:
            command, payload, topic = method.command, method.payload, reply_topic(method.rid)
        rid = best_effort_id(payload)
        call: Call | None = None
        try:
            self._admit()
            request = parse_request(command, payload)
            rid = request.id
            self.guard.check_signature(request.raw, command)
            handler = COMMANDS.get(command)
            if handler is None:
                known = ", ".join(sorted(COMMANDS))
                raise CommandError(f"unknown command {command!r}; known: {known}")
            call = Call(self, request, topic, correlation)
            (log.debug if command in _QUIET else log.info)("command %s id %s", command, rid)
            result = await handler(self, call)
            if call.answered:
                return
            reply = ok_reply(rid, result)
        except CommandError as err:
            # Rate-limit refusals are summarised once the flood ends (above).
            if not err.extra.get("rate_limited") or self._rate_refused == 1:
                log.warning("command %s id %s refused: %s", command, rid,
                            str(err).splitlines()[0] if str(err) else "")
            extra = {k: v for k, v in err.extra.items() if k != "rate_limited"}
            reply = error_reply(rid, str(err), **extra)
        except Exception as err:
            log.exception("command %s id %s failed", command, rid)
            reply = error_reply(rid, f"{type(err).__name__}: {err}")
        if call is not None and call.answered:
            log.warning("command %s id %s failed after its reply: %s", command, rid,
                        reply.get("error"))
            return
        await self.send(topic, correlation, reply)
