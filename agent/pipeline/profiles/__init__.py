"""How the uplink bends to a cloud: topics, retain, credentials, pacing.

``generic`` is plain MQTT as the README describes it.  A cloud profile
changes only what its broker insists on; the uplink's loop stays the same.
"""

from __future__ import annotations

from typing import Any

from agent.config.model import GatewayConfig, MqttConfig
from agent.pipeline.pacing import Pacer

__all__ = ["Outgoing", "Profile", "make_profile"]

#: (topic, payload, retain) as it goes on the wire, or None: not sent at all.
Outgoing = tuple[str, bytes, bool] | None


class Profile:
    """The generic profile: every hook is the identity."""

    name = "generic"
    #: The broker keeps a will and retained messages for us.
    has_will = True

    def __init__(self, mqtt: MqttConfig, gateway: GatewayConfig) -> None:
        self.mqtt = mqtt
        self.gateway = gateway
        self.base = f"{mqtt.topic_prefix}/{gateway.site}/{gateway.id}"
        self.pacer: Pacer | None = None

    def client_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Adjust the aiomqtt.Client arguments (credentials, version, will)."""
        return args

    def session_lifetime(self) -> float | None:
        """Seconds after which the session must reconnect (a credential expires), or None."""
        return None

    def outgoing(self, topic: str, payload: bytes, retain: bool,
                 props: dict[str, str] | None = None) -> Outgoing:
        """Where a publish to ``topic`` really goes; ``props`` describe a data message."""
        return topic, payload, retain

    def filter(self, suffix: str) -> str:
        """The subscription for a handler registered on ``{base}/{suffix}``."""
        return f"{self.base}/{suffix}"


def make_profile(mqtt: MqttConfig, gateway: GatewayConfig) -> Profile:
    # Imported lazily: a generic site never loads the cloud modules.
    if mqtt.profile == "aws-iot":
        from agent.pipeline.profiles.aws import AwsIot

        return AwsIot(mqtt, gateway)
    if mqtt.profile == "azure-iothub":
        from agent.pipeline.profiles.azure import AzureIotHub

        return AzureIotHub(mqtt, gateway)
    return Profile(mqtt, gateway)
