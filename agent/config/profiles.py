"""Cloud profiles at load time: every rule a cloud broker enforces, checked with its line.

A cloud broker disconnects a client that breaks its rules (a QoS 2 publish,
a topic too deep, a message too big), and a gateway that reconnects only to
break them again never delivers anything.  So ``check`` and ``run`` refuse
such a file up front, with the cloud's own number in the message.  The same
limits are kept at run time by ``agent.pipeline.profiles``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from agent.config.model import MqttConfig, SiteConfig
from agent.sdk.driver import DeviceConfig

__all__ = ["AWS", "AZURE_API_VERSION", "check_profile"]

Loc = tuple[str | int, ...]
Report = Callable[[Loc, str], None]

AZURE_API_VERSION = "2021-04-12"


class AWS:
    """AWS IoT Core's documented limits (per connection)."""

    MAX_MESSAGE = 128 * 1024
    TOPIC_LEVELS = 8  # slashes beyond 7 are refused, reserved $aws topics aside
    TOPIC_BYTES = 256
    KEEPALIVE = (30.0, 1200.0)
    PUBLISH_RATE = 100.0  # publishes per second per connection
    BYTE_RATE = 512 * 1024.0  # bytes per second per connection
    # The client id is the thing name: letters, digits, ':', '_', '-', at most 128.
    CLIENT_ID = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")


MQTT = ("uplink", "mqtt")


def _kb(n: int) -> str:
    return f"{n // 1024}KB" if n % 1024 == 0 else f"{n} bytes"


def _longest_topics(site: SiteConfig, devices: Sequence[DeviceConfig]) -> list[tuple[str, str]]:
    """(topic, what) for every topic the agent publishes to or subscribes to."""
    m = site.uplink.mqtt
    base = f"{m.topic_prefix}/{site.gateway.site}/{site.gateway.id}"
    out = [(f"{base}/{s}", s) for s in ("state", "metrics", "reply", "cmd/config.apply")]
    out.extend((f"{base}/data/{d.name}", f"data of device {d.name!r}") for d in devices)
    return out


def _check_aws(site: SiteConfig, devices: Sequence[DeviceConfig], report: Report) -> None:
    m = site.uplink.mqtt
    if m.max_message > AWS.MAX_MESSAGE:
        report((*MQTT, "max_message"),
               f"{_kb(m.max_message)} exceeds AWS IoT Core's 128KB message limit")
    low, high = AWS.KEEPALIVE
    if not low <= m.keepalive <= high:
        report((*MQTT, "keepalive"), f"{m.keepalive:g}s is outside AWS IoT Core's "
               f"range of {low:g}-{high:g}s")
    client_id = m.client_id or site.gateway.id
    if not AWS.CLIENT_ID.match(client_id):
        report((*MQTT, "client_id") if m.client_id else ("gateway", "id"),
               f"client id {client_id!r}: AWS IoT Core needs the thing name "
               "(letters, digits, ':', '_', '-', at most 128); set uplink.mqtt.client_id")
    for i, url in enumerate(m.urls):
        parts = urlsplit(url)
        loc: Loc = (*MQTT, "url", i) if isinstance(m.url, list) else (*MQTT, "url")
        if parts.scheme != "mqtts":
            report(loc, "AWS IoT Core needs TLS: use mqtts://")
        if parts.port == 443 and "x-amzn-mqtt-ca" not in ((m.tls.alpn if m.tls else None) or []):
            report(loc, "port 443 needs ALPN: set uplink.mqtt.tls.alpn: [x-amzn-mqtt-ca]")
    if m.tls is None or m.tls.cert is None:
        report((*MQTT, "tls"), "AWS IoT Core needs a client certificate: set tls.cert and "
               "tls.key (mutual TLS), and tls.ca to the Amazon root CA")
    if m.username is not None or m.password is not None:
        report((*MQTT, "username" if m.username is not None else "password"),
               "AWS IoT Core authenticates by client certificate; drop username/password")
    _check_topics(site, devices, report)


def _check_topics(site: SiteConfig, devices: Sequence[DeviceConfig], report: Report) -> None:
    for topic, what in _longest_topics(site, devices):
        levels = topic.count("/") + 1
        if levels > AWS.TOPIC_LEVELS:
            report((*MQTT, "topic_prefix"),
                   f"topic {topic!r} ({what}) has {levels} levels; AWS IoT Core allows "
                   f"{AWS.TOPIC_LEVELS}: shorten topic_prefix")
            return
        size = len(topic.encode())
        if size > AWS.TOPIC_BYTES:
            report((*MQTT, "topic_prefix"),
                   f"topic of {what} is {size} bytes; AWS IoT Core allows {AWS.TOPIC_BYTES}")
            return


def _check_azure(site: SiteConfig, report: Report) -> None:
    m = site.uplink.mqtt
    if not m.hub:
        report((*MQTT, "hub"), "azure-iothub needs hub (the IoT hub's name, without "
               ".azure-devices.net)")
    if not m.device_id:
        report((*MQTT, "device_id"), "azure-iothub needs device_id")
    has_cert = m.tls is not None and m.tls.cert is not None
    if m.device_key is None and not has_cert:
        report((*MQTT, "device_key"), "azure-iothub needs device_key: ${file:...} (SAS) or "
               "a client certificate in tls.cert/tls.key")
    if m.protocol == "5":
        report((*MQTT, "protocol"), "Azure IoT Hub speaks MQTT 3.1.1 only: use 3.1.1 or auto")
    if m.username is not None or m.password is not None:
        report((*MQTT, "username" if m.username is not None else "password"),
               "azure-iothub makes its own username and SAS password; drop these")
    if m.max_message > 256 * 1024:
        report((*MQTT, "max_message"),
               f"{_kb(m.max_message)} exceeds Azure IoT Hub's 256KB message limit")
    for i, url in enumerate(m.urls if m.url is not None else []):
        if urlsplit(url).scheme != "mqtts":
            loc: Loc = (*MQTT, "url", i) if isinstance(m.url, list) else (*MQTT, "url")
            report(loc, "Azure IoT Hub needs TLS: use mqtts://")


def check_profile(site: SiteConfig, devices: Sequence[DeviceConfig], report: Report) -> None:
    """Report every violation of ``uplink.mqtt.profile``'s rules (and a missing url)."""
    m: MqttConfig = site.uplink.mqtt
    if m.url is None and m.profile != "azure-iothub":  # Azure's comes from its hub
        report((*MQTT, "url"), "required key is missing")
    if m.profile != "azure-iothub":
        for key in ("hub", "device_id", "device_key"):
            if getattr(m, key) is not None:
                report((*MQTT, key), f"{key} is for profile: azure-iothub only")
    if m.profile == "aws-iot":
        _check_aws(site, devices, report)
    elif m.profile == "azure-iothub":
        _check_azure(site, report)
