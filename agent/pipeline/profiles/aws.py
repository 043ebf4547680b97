"""AWS IoT Core: mutual TLS, the thing name as client id, and its rate limits.

Load-time checks (QoS, sizes, topic depth, keepalive, client id) are in
``agent.config.profiles``; here the per-connection limits are kept while
running: 100 publishes/s and 512 KB/s, the backlog drain paced behind live
data.  AWS IoT Core keeps retained messages and the will (since 2021), so
``state`` stays retained with its last will.  Everything is QoS 1 (AWS
refuses QoS 2, which the agent never uses).
"""

from __future__ import annotations

import logging

from agent.config.model import GatewayConfig, MqttConfig
from agent.config.profiles import AWS
from agent.pipeline.pacing import Pacer
from agent.pipeline.profiles import Outgoing, Profile

__all__ = ["AwsIot"]

log = logging.getLogger("agent.uplink")


class AwsIot(Profile):
    name = "aws-iot"

    def __init__(self, mqtt: MqttConfig, gateway: GatewayConfig) -> None:
        super().__init__(mqtt, gateway)
        self.pacer = Pacer(messages_per_s=AWS.PUBLISH_RATE, bytes_per_s=AWS.BYTE_RATE,
                           max_message=min(mqtt.max_message, AWS.MAX_MESSAGE))
        self.refused = 0  # messages not sent because AWS would refuse them

    def outgoing(self, topic: str, payload: bytes, retain: bool,
                 props: dict[str, str] | None = None) -> Outgoing:
        # Data is split to max_message (<= 128KB, checked at load) by the
        # buffer and never dropped here; a management message
        # (a big config.get reply) could still exceed the limit, and AWS
        # answers that by closing the connection: drop it, say so, count it.
        if props is None and len(payload) > AWS.MAX_MESSAGE:
            self.refused += 1
            log.error("not sent to %s: %d bytes exceed AWS IoT Core's 128KB message limit",
                      topic, len(payload))
            return None
        return topic, payload, retain
