"""The azure-iothub profile against Mosquitto playing the hub's shape.

Mosquitto gets the hub's username form, the SAS token as that user's
password, and an ACL with the hub's topic rules: a device may publish only
to its events, twin and method-response topics and subscribe only to its
methods, twin responses and cloud-to-device messages.  Anything else the
agent sent would be denied (and logged by Mosquitto).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import parse_qs, quote_plus, urlencode

import pytest

import agent.pipeline.profiles.azure as azure_mod
from agent.config.model import GatewayConfig, MqttConfig
from agent.pipeline.profiles.azure import AzureIotHub, sas_token
from tests.conftest import Broker, Collector, async_wait_until, free_port
from tests.core.tls_certs import make_pki
from tests.management.conftest import GATEWAY, running_agent

HUB = "testhub"
KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
NOW = 1_800_000_000.0
TTL = 3600
USER = f"{HUB}.azure-devices.net/{GATEWAY}/?api-version=2021-04-12"


def docs_sas(uri: str, key: str, expiry: int) -> str:
    """The token as Azure's documentation computes it (quote_plus + urlencode)."""
    sign_key = f"{quote_plus(uri)}\n{expiry}"
    signature = base64.b64encode(
        hmac.new(base64.b64decode(key), sign_key.encode(), hashlib.sha256).digest())
    return "SharedAccessSignature " + urlencode({"sr": uri, "sig": signature, "se": str(expiry)})


def test_sas_token_matches_an_independent_computation() -> None:
    resource = f"{HUB}.azure-devices.net/devices/{GATEWAY}"
    expiry = int(NOW) + TTL
    assert sas_token(resource, KEY, expiry) == docs_sas(resource, KEY, expiry)
    # A fixed vector, so a change in both computations is caught too.
    vector = sas_token("h.azure-devices.net/devices/d", base64.b64encode(b"k").decode(), 1)
    expected_sig = base64.b64encode(hmac.new(
        b"k", b"h.azure-devices.net%2Fdevices%2Fd\n1", hashlib.sha256).digest()).decode()
    assert vector == ("SharedAccessSignature sr=h.azure-devices.net%2Fdevices%2Fd"
                      f"&sig={quote_plus(expected_sig)}&se=1")


def test_token_is_renewed_before_it_expires(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(KEY)
    from agent.sdk.types import SecretText

    mqtt = MqttConfig(profile="azure-iothub", hub=HUB, device_id=GATEWAY,
                      device_key=SecretText(KEY), token_ttl=TTL)
    profile = AzureIotHub(mqtt, GatewayConfig(id=GATEWAY, site="lab"))
    first, later = profile.token(NOW), profile.token(NOW + 100)
    assert first != later and first is not None and f"se={int(NOW) + TTL}" in first
    lifetime = profile.session_lifetime()
    assert lifetime is not None and 0 < lifetime < TTL, "must reconnect before expiry"
    assert profile.username() == USER
    assert mqtt.urls == [f"mqtts://{HUB}.azure-devices.net:8883"]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[Broker, int, dict[str, Path]]]:
    pki = make_pki(tmp_path)
    token = sas_token(f"{HUB}.azure-devices.net/devices/{GATEWAY}", KEY, int(NOW) + TTL)
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), USER, token], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "service", "service"], check=True)
    acl = tmp_path / "acl"
    acl.write_text(
        "user service\ntopic readwrite #\ntopic readwrite $iothub/#\n\n"
        f"user {USER}\n"
        f"topic write devices/{GATEWAY}/messages/events/#\n"
        f"topic read devices/{GATEWAY}/messages/devicebound/#\n"
        "topic write $iothub/twin/PATCH/properties/reported/#\n"
        "topic write $iothub/twin/GET/#\n"
        "topic read $iothub/twin/res/#\n"
        "topic read $iothub/methods/POST/#\n"
        "topic write $iothub/methods/res/#\n")
    tls_port = free_port()
    broker = Broker(tmp_path, extra_conf=(
        f"password_file {passwd}\nacl_file {acl}\nallow_anonymous false\nlog_type all\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server_key']}\n"))
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true\n", ""))
    broker.start()
    yield broker, tls_port, pki
    broker.stop()


def service(broker: Broker, topic: str, name: str) -> Collector:
    col = Collector(broker, topic, name)
    col.client_kwargs = {"username": "service", "password": "service"}
    return col


async def test_data_twin_and_direct_methods_through_the_hub_shape(
    hub: tuple[Broker, int, dict[str, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, tls_port, pki = hub
    monkeypatch.setattr(azure_mod, "time", SimpleNamespace(time=lambda: NOW))
    key = tmp_path / "device.key"
    key.write_text(KEY + "\n")
    target = cast(Broker, SimpleNamespace(url=f"mqtts://127.0.0.1:{tls_port}", port=tls_port))
    mqtt: dict[str, Any] = {
        "profile": "azure-iothub", "hub": HUB, "device_id": GATEWAY,
        "device_key": f"${{file:{key}}}",
        "tls": {"ca": str(pki["ca"])}, "reconnect_spread": 0}
    async with service(broker, "#", "svc-all") as events, \
            service(broker, "$iothub/#", "svc-iothub") as iothub, \
            running_agent(target, tmp_path, mqtt=mqtt) as gw:
        await async_wait_until(lambda: any("/messages/events/" in t and "seq=" in t
                                           for t, _, _ in events.messages), 30, "data events")
        # Data: the device's events topic, with URL-encoded properties.
        topic, payload, retained = next(m for m in events.messages if "seq=" in m[0])
        assert topic.startswith(f"devices/{GATEWAY}/messages/events/")
        props = parse_qs(topic.rsplit("/", 1)[1])
        body = json.loads(payload)
        assert props["device"] == [body["device"]] and props["seq"] == [str(body["seq"])]
        assert props["$.ct"] == ["application/json"] and props["gateway"] == [GATEWAY]
        assert "%24.ct=application%2Fjson" in topic
        assert not retained
        # State: a reported-properties patch, not a retained message.
        await async_wait_until(lambda: [m for m in iothub.messages if "/twin/PATCH/" in m[0]],
                               30, "the twin patch")
        patch = next(m for m in iothub.messages if "/twin/PATCH/" in m[0])
        assert patch[0].startswith("$iothub/twin/PATCH/properties/reported/?$rid=")
        assert json.loads(patch[1])["status"] == "online"
        # A direct method in, its response on the hub's response topic.
        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", broker.port, username="service",
                                  password="service", identifier="svc-call") as call:
            await call.publish("$iothub/methods/POST/ping/?$rid=42", b"{}", qos=1)
            await call.publish("$iothub/methods/POST/nosuch/?$rid=43", b"{}", qos=1)

        def answer(rid: str) -> tuple[str, dict[str, Any]] | None:
            for t, p, _ in iothub.messages:
                if t.startswith("$iothub/methods/res/") and t.endswith(f"$rid={rid}"):
                    return t, json.loads(p)
            return None

        await async_wait_until(lambda: answer("42") and answer("43"), 30, "method responses")
        ok, bad = answer("42"), answer("43")
        assert ok is not None and ok[0] == "$iothub/methods/res/200/?$rid=42"
        assert ok[1]["ok"] and ok[1]["result"]["pong"] is True and ok[1]["id"] == "42"
        assert bad is not None and bad[0].startswith("$iothub/methods/res/400/")
        assert not bad[1]["ok"]
        assert gw.agent.uplink.endpoint.url.startswith("mqtts://")
    # Nothing was retained, nothing was denied: every publish kept to the hub's rules.
    log = (tmp_path / "mosquitto.log").read_text(errors="replace")
    assert "Denied PUBLISH" not in log, log[-2000:]
    assert not any(r for _, _, r in events.messages + iothub.messages)
    offline = [json.loads(p) for t, p, _ in iothub.messages if "/twin/PATCH/" in t]
    assert offline[-1]["status"] == "offline", "a clean stop reports offline in the twin"


async def test_session_renews_its_token_by_reconnecting(
    hub: tuple[Broker, int, dict[str, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, tls_port, pki = hub
    monkeypatch.setattr(azure_mod, "time", SimpleNamespace(time=lambda: NOW))
    monkeypatch.setattr(AzureIotHub, "session_lifetime", lambda self: 1.0)
    key = tmp_path / "device.key"
    key.write_text(KEY)
    target = cast(Broker, SimpleNamespace(url=f"mqtts://127.0.0.1:{tls_port}", port=tls_port))
    mqtt: dict[str, Any] = {
        "profile": "azure-iothub", "hub": HUB, "device_id": GATEWAY,
        "device_key": f"${{file:{key}}}",
        "tls": {"ca": str(pki["ca"])}}
    async with running_agent(target, tmp_path, devices=[], mqtt=mqtt) as gw:
        await async_wait_until(lambda: gw.agent.uplink.counters.reconnects >= 3, 30,
                               "reconnects to renew the token")
        assert gw.agent.uplink.counters.errors == 0, "a renewal is not an outage"


def test_x509_device_sends_no_password_and_never_renews(tmp_path: Path) -> None:
    from agent.config.model import TlsConfig

    mqtt = MqttConfig(profile="azure-iothub", hub=HUB, device_id="dev-x509",
                      tls=TlsConfig(cert=tmp_path / "c.pem", key=tmp_path / "k.pem"))
    profile = AzureIotHub(mqtt, GatewayConfig(id=GATEWAY, site="lab"))
    args = profile.client_args({"username": None, "password": None, "identifier": "x"})
    assert args["password"] is None and args["will"] is None
    assert args["identifier"] == "dev-x509"
    assert args["username"] == f"{HUB}.azure-devices.net/dev-x509/?api-version=2021-04-12"
    assert profile.session_lifetime() is None
