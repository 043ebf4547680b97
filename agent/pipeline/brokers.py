"""Which broker and which MQTT version: the uplink's connection choices.

``uplink.mqtt.url`` may list a cluster's nodes.  The uplink tries them in
order and moves on to the next when a connect fails or an established link
dies; once every node has failed in a row (a round), the usual capped
backoff applies before the next round.  ``protocol: auto`` starts with
MQTT 5 and, when a broker refuses that version (NATS, RabbitMQ before 3.13,
Azure IoT Hub), uses 3.1.1 with that broker for the rest of the process:
reconnects do not pay for the refused attempt again.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from agent.config.model import MqttConfig

__all__ = ["Endpoint", "Rotation", "is_version_refused", "tls_context"]

log = logging.getLogger("agent.uplink")

V5 = aiomqtt.ProtocolVersion.V5
V311 = aiomqtt.ProtocolVersion.V311

# CONNACK codes for "I do not speak this version": 132 (MQTT 5 reason code,
# paho's mapping of a 3.1.1 broker's refusal too) and 1 (3.1.1 return code).
_VERSION_REFUSED = {1, 132}


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(url, parts.hostname or "", parts.port or (8883 if tls else 1883), tls)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def is_version_refused(err: BaseException) -> bool:
    rc = getattr(err, "rc", None)
    value = getattr(rc, "value", rc)
    return isinstance(err, aiomqtt.MqttCodeError) and value in _VERSION_REFUSED


def tls_context(m: MqttConfig) -> ssl.SSLContext:
    """One context for every mqtts:// node (the same CA, client cert and ALPN)."""
    ctx = ssl.create_default_context(cafile=str(m.tls.ca) if m.tls and m.tls.ca else None)
    if m.tls and m.tls.cert:
        ctx.load_cert_chain(str(m.tls.cert), str(m.tls.key) if m.tls.key else None)
    if m.tls and m.tls.alpn:
        # AWS IoT Core on port 443 picks MQTT by this ALPN name.
        ctx.set_alpn_protocols(m.tls.alpn)
    return ctx


class Rotation:
    """The broker list, where we are in it, and the version each node speaks."""

    def __init__(self, m: MqttConfig) -> None:
        self.endpoints = [Endpoint.parse(u) for u in m.urls]
        self.protocol = m.protocol
        self.index = 0
        self.failures = 0  # in a row, since the last established link
        # Learned once for the process and for the whole list (a cluster's
        # nodes run the same server): failovers do not pay for it again.
        self._v311 = False

    def reconfigure(self, m: MqttConfig) -> None:
        urls = m.urls
        if urls != [e.url for e in self.endpoints]:
            self._v311 = False  # other brokers: learn their version afresh
        self.endpoints = [Endpoint.parse(u) for u in urls]
        self.protocol = m.protocol
        self.index = 0
        self.failures = 0

    @property
    def current(self) -> Endpoint:
        return self.endpoints[self.index % len(self.endpoints)]

    def version(self, endpoint: Endpoint) -> aiomqtt.ProtocolVersion:
        if self.protocol == "3.1.1" or self._v311:
            return V311
        return V5

    def fall_back(self, endpoint: Endpoint, err: BaseException) -> bool:
        """True when ``err`` is a version refusal that 3.1.1 may fix (retry at once)."""
        if self.protocol != "auto" or self._v311 or not is_version_refused(err):
            return False
        self._v311 = True
        log.warning("uplink: %s refuses MQTT 5 (%s); using MQTT 3.1.1 from now on",
                    endpoint, err)
        return True

    def established(self) -> None:
        self.failures = 0

    def failed(self) -> bool:
        """Move to the next node; True when a whole round has failed (back off)."""
        self.failures += 1
        self.index = (self.index + 1) % len(self.endpoints)
        return self.failures % len(self.endpoints) == 0

    def lost(self) -> None:
        """An established link died: the next attempt goes to the next node."""
        self.failures = 0
        self.index = (self.index + 1) % len(self.endpoints)

    def client_args(self, endpoint: Endpoint, m: MqttConfig) -> dict[str, Any]:
        return {
            "hostname": endpoint.host,
            "port": endpoint.port,
            "protocol": self.version(endpoint),
            "tls_context": tls_context(m) if endpoint.tls else None,
        }
