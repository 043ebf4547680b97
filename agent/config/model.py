"""The core of the site model: everything but the devices' own options.

Devices are validated by their driver's model (see ``agent.config.load``).
Defaults live here and only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator

from agent.config.sparkplug import SparkplugConfig
from agent.sdk.driver import NAME_PATTERN, StrictModel
from agent.sdk.types import ByteSize, Duration, Secret, check_url

__all__ = [
    "BufferConfig",
    "GatewayConfig",
    "HttpConfig",
    "ManagementConfig",
    "MqttConfig",
    "SiteConfig",
    "TlsConfig",
    "UplinkConfig",
]

# Used in MQTT topics: no '/', '+', '#' or spaces.
TOPIC_WORD = NAME_PATTERN


class GatewayConfig(StrictModel):
    id: str = Field(pattern=TOPIC_WORD, description="Unique gateway id; appears in every topic")
    site: str = Field(pattern=TOPIC_WORD, description="Site name; second level of every topic")


class TlsConfig(StrictModel):
    ca: Path | None = Field(None, description="CA bundle to verify the broker (system CAs if unset)")
    cert: Path | None = Field(None, description="Client certificate (PEM)")
    key: Path | None = Field(None, description="Client private key (PEM)")
    alpn: list[str] | None = Field(None, description="ALPN protocols (AWS IoT on 443: x-amzn-mqtt-ca)")

    @field_validator("key")
    @classmethod
    def _key_needs_cert(cls, key: Path | None, info: Any) -> Path | None:
        if key is not None and info.data.get("cert") is None:
            raise ValueError("a client key needs a client cert")
        return key


Profile = Literal["generic", "aws-iot", "azure-iothub"]
# The cloud profiles spread a fleet's reconnects after a broker restart.
_CLOUD_SPREAD = 30.0


def _protocol(value: Any) -> Any:
    # `protocol: 5` is an int in YAML; `3.1.1` is text.
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class MqttConfig(StrictModel):
    # Required unless profile azure-iothub names a hub (checked in agent.config.profiles).
    url: str | list[str] | None = Field(
        None, description="mqtt://host[:1883] or mqtts://host[:8883], or a list of them (a cluster)")
    username: str | None = None
    password: Secret | None = Field(None, description="${env:NAME} or ${file:/path}")
    client_id: str | None = Field(None, description="Defaults to the gateway id")
    tls: TlsConfig | None = None
    topic_prefix: str = Field("m2m", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    format: Literal["json", "sparkplug_b"] = Field("json", description="json or sparkplug_b")
    sparkplug: SparkplugConfig | None = Field(None, description="Sparkplug B ids (format sparkplug_b)")
    max_message: ByteSize = Field(128 * 1024, ge=1024, description="Largest data message")
    keepalive: Duration = Field(30.0, ge=5)
    max_inflight: int = Field(16, ge=1, le=1000, description="Unacknowledged data messages")
    reconnect_max: Duration = Field(60.0, gt=0, description="Cap of the reconnect backoff")
    protocol: Annotated[Literal["auto", "5", "3.1.1"], BeforeValidator(_protocol)] = Field(
        "auto", description="MQTT version; auto: 5, and 3.1.1 when the broker refuses 5")
    profile: Profile = Field("generic", description="Cloud rules: generic, aws-iot, azure-iothub")
    reconnect_spread: Duration | None = Field(
        None, ge=0, description="Random delay before the first reconnect (generic 0, clouds 30s)")
    # azure-iothub only (checked in agent.config.profiles).
    hub: str | None = Field(None, pattern=r"^[A-Za-z0-9-]{3,50}$", description="IoT hub name")
    device_id: str | None = Field(None, pattern=r"^[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}$",
                                  description="Azure IoT Hub device id")
    device_key: Secret | None = Field(None, description="${file:..}: the device's SAS key")
    token_ttl: Duration = Field(3600.0, ge=300, le=365 * 86400.0,
                                description="Azure SAS token lifetime; renewed before it ends")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | list[str] | None) -> str | list[str] | None:
        if isinstance(url, list):
            if not url:
                raise ValueError("give at least one broker url")
            return [check_url(u, ("mqtt", "mqtts"), f"url {u!r}") for u in url]
        return None if url is None else check_url(url, ("mqtt", "mqtts"))

    @property
    def urls(self) -> list[str]:
        """Every broker, in the order tried."""
        if isinstance(self.url, list):
            return list(self.url)
        if self.url is None:
            return [f"mqtts://{self.hub}.azure-devices.net:8883"]
        return [self.url]

    @property
    def spread(self) -> float:
        if self.reconnect_spread is not None:
            return self.reconnect_spread
        return 0.0 if self.profile == "generic" else _CLOUD_SPREAD

    @field_validator("sparkplug")
    @classmethod
    def _sparkplug_needs_format(cls, sp: SparkplugConfig | None, info: Any) -> SparkplugConfig | None:
        if sp is not None and info.data.get("format") != "sparkplug_b":
            raise ValueError("sparkplug settings need format: sparkplug_b")
        return sp

    @property
    def host(self) -> str:
        return urlsplit(self.urls[0]).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.urls[0])
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def use_tls(self) -> bool:
        return urlsplit(self.urls[0]).scheme == "mqtts"


class UplinkConfig(StrictModel):
    mqtt: MqttConfig


class BufferConfig(StrictModel):
    # Bounds the whole buffer directory; SQLite's WAL and index take ~160 KB of
    # it at the least (agent/pipeline/buffer_space.py), hence the minimum.
    max_size: ByteSize = Field(512 * 1024**2, ge=256 * 1024,
                               description="Database + WAL + index on disk; oldest dropped beyond")
    max_age: Duration = Field(7 * 86400.0, gt=0, description="Older batches are dropped")
    commit_interval: Duration = Field(
        1.0, ge=0.05, le=60, description="Readings are committed to disk at least this often"
    )


class ManagementConfig(StrictModel):
    metrics_interval: Duration = Field(60.0, ge=1)
    rollback_after: Duration = Field(120.0, ge=5)
    command_key: Secret | None = Field(None, description="HMAC key; then commands must be signed")
    command_window: Duration = Field(60.0, ge=1, description="Accepted clock skew of signed commands")
    command_rate: float = Field(20.0, gt=0, description="Commands accepted per second (burst x2)")


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port), or ValueError."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port such as 127.0.0.1:9180, not {listen!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    import ipaddress  # here: a gateway without `http:` never needs the module (~0.2 MB)

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve anywhere: treat it as exposed


class HttpConfig(StrictModel):
    # token is declared first so that listen's check below sees it.
    token: Secret | None = Field(None, description="${file:..}: required off loopback")
    listen: str = Field("127.0.0.1:9180", validate_default=True,
                        description="host:port of the metrics endpoint and status page")

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str, info: Any) -> str:
        host, _ = split_listen(listen)
        # A token that failed its own check is absent from info.data: that
        # error is reported on its line already.
        if "token" in info.data and info.data["token"] is None and not is_loopback(host):
            raise ValueError(f"{host} is not a loopback address: set http.token "
                             "(${file:/path}) or listen on 127.0.0.1")
        return listen


class SiteConfig(StrictModel):
    gateway: GatewayConfig
    uplink: UplinkConfig
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    management: ManagementConfig = Field(default_factory=ManagementConfig)
    # Local metrics endpoint and status page; off when left out.
    http: HttpConfig | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Validated one by one with each device's driver model (``Site.devices``);
    # here only its shape is checked and nothing of it is kept.
    devices: list[None] = Field(default_factory=list)
