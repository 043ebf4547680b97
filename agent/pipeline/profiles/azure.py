"""Azure IoT Hub: its username, SAS tokens, and its fixed topic tree.

IoT Hub speaks MQTT 3.1.1 only, keeps no retained messages and no will, and
disconnects a device that publishes anywhere but its own topics.  So:

- data goes to ``devices/{device_id}/messages/events/`` with the gateway,
  device, seq and content type as URL-encoded message properties;
- ``state`` becomes a reported-properties update of the device twin
  (``$iothub/twin/PATCH/properties/reported/?$rid=N``): the twin keeps the
  last one, as a retained message would;
- other management messages (metrics, replies not to a direct method) go
  to the events topic with a ``kind`` property;
- commands arrive as direct methods (``$iothub/methods/POST/{command}/?$rid=``)
  and are answered on ``$iothub/methods/res/{status}/?$rid=``.

There is no will.  What replaces it: IoT Hub itself tracks the device's
connection (the twin's ``connectionState`` and Event Grid's
``DeviceDisconnected`` event, raised when keepalive lapses), and the agent
reports ``status: online`` on every connect and ``offline`` on a clean stop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import time
from typing import Any
from urllib.parse import quote, urlencode

from agent.config.model import GatewayConfig, MqttConfig
from agent.config.profiles import AZURE_API_VERSION
from agent.pipeline.brokers import V311
from agent.pipeline.profiles import Outgoing, Profile

__all__ = ["AzureIotHub", "sas_token"]

METHODS = "$iothub/methods/POST/#"


def sas_token(resource: str, key_b64: str, expiry: int) -> str:
    """``SharedAccessSignature sr=..&sig=..&se=..`` for ``resource`` valid until ``expiry``.

    The signature is HMAC-SHA256, keyed with the base64-decoded device key,
    over the URL-encoded resource URI, a newline and the expiry (epoch s).
    """
    sr = quote(resource, safe="")
    digest = hmac.new(base64.b64decode(key_b64), f"{sr}\n{expiry}".encode(), hashlib.sha256)
    sig = quote(base64.b64encode(digest.digest()).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"


class AzureIotHub(Profile):
    name = "azure-iothub"
    has_will = False

    def __init__(self, mqtt: MqttConfig, gateway: GatewayConfig) -> None:
        super().__init__(mqtt, gateway)
        self.hub = f"{mqtt.hub}.azure-devices.net"
        self.device_id = mqtt.device_id or gateway.id
        self.events = f"devices/{self.device_id}/messages/events/"
        self._rid = itertools.count(1)

    def username(self) -> str:
        return f"{self.hub}/{self.device_id}/?api-version={AZURE_API_VERSION}"

    def token(self, now: float | None = None) -> str | None:
        key = self.mqtt.device_key
        if key is None:
            return None  # X.509: the client certificate authenticates
        expiry = int((time.time() if now is None else now) + self.mqtt.token_ttl)
        return sas_token(f"{self.hub}/devices/{self.device_id}", key.get_secret_value(), expiry)

    def client_args(self, args: dict[str, Any]) -> dict[str, Any]:
        # A fresh token on every connect: this is how it is renewed.
        return {**args, "username": self.username(), "password": self.token(),
                "identifier": self.device_id, "protocol": V311, "will": None}

    def session_lifetime(self) -> float | None:
        # Reconnect with a new token well before the hub drops us at expiry.
        return None if self.mqtt.device_key is None else self.mqtt.token_ttl * 0.8

    def outgoing(self, topic: str, payload: bytes, retain: bool,
                 props: dict[str, str] | None = None) -> Outgoing:
        if topic.startswith("$iothub/"):
            return topic, payload, False
        suffix = topic.removeprefix(self.base + "/")
        if suffix == "state":
            return f"$iothub/twin/PATCH/properties/reported/?$rid={next(self._rid)}", payload, False
        fields = props if props is not None else {"gateway": self.gateway.id, "kind": suffix}
        fields = {**fields, "$.ct": "application/json", "$.ce": "utf-8"}
        return self.events + urlencode(fields), payload, False

    def filter(self, suffix: str) -> str:
        return METHODS if suffix.startswith("cmd/") else super().filter(suffix)
