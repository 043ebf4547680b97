"""The aws-iot profile: ALPN for port 443, mutual TLS, and refusing what AWS would refuse."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from agent.config.model import GatewayConfig, MqttConfig, TlsConfig
from agent.pipeline.brokers import tls_context
from agent.pipeline.profiles import make_profile
from agent.pipeline.profiles.aws import AwsIot
from tests.core.tls_certs import make_pki


async def test_alpn_and_client_certificate_reach_the_server(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    server_ctx.load_cert_chain(str(pki["server"]), str(pki["server_key"]))
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS, as AWS IoT Core
    server_ctx.set_alpn_protocols(["x-amzn-mqtt-ca"])
    seen: dict[str, object] = {}

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        obj = writer.get_extra_info("ssl_object")
        seen["alpn"] = obj.selected_alpn_protocol()
        seen["peer"] = obj.getpeercert()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    mqtt = MqttConfig(url=f"mqtts://127.0.0.1:{port}", profile="aws-iot", tls=TlsConfig(
        ca=pki["ca"], cert=pki["client"], key=pki["client_key"], alpn=["x-amzn-mqtt-ca"]))
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls_context(mqtt),
                                                  server_hostname="127.0.0.1")
        await asyncio.sleep(0.1)
        writer.close()
    assert seen["alpn"] == "x-amzn-mqtt-ca"
    assert seen["peer"], "no client certificate presented"


def test_a_message_aws_would_refuse_is_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    mqtt = MqttConfig(url="mqtts://x-ats.iot.eu-west-1.amazonaws.com", profile="aws-iot")
    profile = make_profile(mqtt, GatewayConfig(id="gw", site="s"))
    assert isinstance(profile, AwsIot) and profile.pacer is not None
    assert profile.outgoing("m2m/s/gw/reply", b"x" * (128 * 1024 + 1), False) is None
    assert profile.refused == 1 and "128KB" in caplog.text
    assert profile.outgoing("m2m/s/gw/reply", b"x" * 1000, False) == (
        "m2m/s/gw/reply", b"x" * 1000, False)
