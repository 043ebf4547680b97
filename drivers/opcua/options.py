"""Options of an OPC UA device: the model ``edge-agent check`` validates.

Cheap to import (pydantic only): asyncua is loaded when a device starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from agent.sdk.driver import DeviceConfig, StrictModel, TagConfig
from agent.sdk.types import Duration, Secret, check_url
from drivers.opcua.nodeid import parse_node

__all__ = ["SECURITY_CHOICES", "OpcuaConnection", "OpcuaDevice", "OpcuaTag", "split_security"]

# Policy and message mode in one word, as the SPEC writes it.  The policy
# names follow the OPC UA profile names; the table maps them to asyncua's
# class-name suffixes (see security.py).
Security = Literal[
    "None",
    "Basic256Sha256_Sign",
    "Basic256Sha256_SignAndEncrypt",
    "Aes128_Sha256_RsaOaep_Sign",
    "Aes128_Sha256_RsaOaep_SignAndEncrypt",
    "Aes256_Sha256_RsaPss_Sign",
    "Aes256_Sha256_RsaPss_SignAndEncrypt",
]
SECURITY_CHOICES: tuple[str, ...] = get_args(Security)


def split_security(security: str) -> tuple[str, str]:
    """'Basic256Sha256_SignAndEncrypt' -> ('Basic256Sha256', 'SignAndEncrypt')."""
    if security == "None":
        return "None", "None"
    policy, _, mode = security.rpartition("_")
    return policy, mode


class OpcuaConnection(StrictModel):
    endpoint: str = Field(description="opc.tcp://host[:4840][/path] of the server")
    security: Security = Field(
        "None", description="Policy and mode, e.g. Basic256Sha256_SignAndEncrypt, or None"
    )
    username: str | None = Field(None, min_length=1, description="User name; anonymous if unset")
    password: Secret | None = Field(None, description="${env:NAME} or ${file:/path}")
    server_certificate: Path | None = Field(
        None, description="Pinned server certificate (DER or PEM); refuses any other"
    )
    trust_on_first_use: bool = Field(
        False, description="Pin the certificate the server shows on the first connect"
    )
    application_uri: str | None = Field(
        None, description="Client application URI; default urn:<hostname>:edge-agent"
    )
    timeout: Duration = Field(5.0, gt=0, le=600, description="Answer time of one request")
    keepalive: Duration = Field(
        2.0, ge=0.1, le=600, description="Session watchdog: a server silent this long is down"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str) -> str:
        return check_url(endpoint, ("opc.tcp",), "endpoint")

    @model_validator(mode="after")
    def _consistent(self) -> OpcuaConnection:
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if self.username is not None and self.password is None:
            raise ValueError("username is set but password is not")
        if self.server_certificate is not None and self.trust_on_first_use:
            raise ValueError("use either server_certificate or trust_on_first_use, not both")
        if self.security == "None":
            if self.server_certificate is not None or self.trust_on_first_use:
                raise ValueError(
                    "server_certificate/trust_on_first_use need a secure policy, "
                    "e.g. security: Basic256Sha256_SignAndEncrypt"
                )
        elif self.server_certificate is None and not self.trust_on_first_use:
            # An unpinned secure channel would accept any impostor's certificate.
            raise ValueError(
                f"security {self.security} needs the server certificate pinned: "
                "set server_certificate: /path/to/server.der or trust_on_first_use: true"
            )
        return self


class OpcuaTag(TagConfig):
    node: str = Field(description="NodeId: ns=2;s=..., nsu=urn:...;s=..., i=2258")
    # `deadband` (a number or "2%") is the sdk's, shared with every driver;
    # in subscribe mode it also goes to the server as a DataChangeFilter.
    deadband_type: Literal["absolute", "percent"] = Field(
        "absolute", description="Legacy spelling: deadband: 1 with percent is deadband: 1%"
    )
    sampling_interval: Duration | None = Field(
        None, ge=0, description="Subscribe: this tag's sampling interval (default: interval)"
    )
    queue_size: int | None = Field(
        None, ge=1, le=10000, description="Subscribe: values the server queues between publishes"
    )

    @field_validator("node")
    @classmethod
    def _node(cls, node: str) -> str:
        parse_node(node)
        return node.strip()

    @model_validator(mode="before")
    @classmethod
    def _legacy_percent(cls, data: Any) -> Any:
        # `deadband: 1, deadband_type: percent` (before the sdk's "1%") keeps working.
        if (isinstance(data, dict) and data.get("deadband_type") == "percent"
                and isinstance(data.get("deadband"), int | float)
                and not isinstance(data.get("deadband"), bool)):
            data = dict(data)
            data["deadband"] = f"{data['deadband']}%"
        return data


class OpcuaDevice(DeviceConfig):
    driver: Literal["opcua"] = "opcua"
    connection: OpcuaConnection
    mode: Literal["subscribe", "poll"] = Field(
        "subscribe", description="subscribe: the server pushes changes; poll: read every interval"
    )
    interval: Duration = Field(
        1.0, gt=0, description="Sampling interval (subscribe) or the poll period (poll)"
    )
    publishing_interval: Duration | None = Field(
        None, gt=0, description="Subscribe: how often the server sends changes (default interval)"
    )
    queue_size: int = Field(1, ge=1, le=10000, description="Subscribe: default queue per tag")
    tags: Sequence[OpcuaTag] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _poll_follows_interval(cls, data: Any) -> Any:
        # One knob for the user: the scheduler's poll period is the interval.
        if isinstance(data, dict):
            if "poll" in data:
                raise ValueError("OPC UA devices use interval, not poll")
            data = dict(data)
            if "interval" in data:
                data["poll"] = data["interval"]
        return data

    def percent_needs_range(self) -> bool:
        # Subscribed, the server applies a percent deadband against the node's
        # EURange; the local stage needs `range` only when it has to stand in.
        return self.mode != "subscribe"

    def tag(self, name: str) -> OpcuaTag:
        for tag in self.tags:
            if tag.name == name:
                return tag
        raise KeyError(name)
