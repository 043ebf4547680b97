"""mqtts:// with a CA, a client certificate and username/password, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.config.load import parse_site
from agent.runtime.agent import Agent
from drivers.modbus.simulator import simulate
from tests.conftest import Broker, Collector, async_wait_until, free_port
from tests.core.tls_certs import make_pki


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, int, dict[str, Path]]]:
    pki = make_pki(tmp_path)
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "gw-tls", "s3cret-pw"], check=True)
    tls_port = free_port()
    # The plain listener on the Broker's own port serves the test's subscriber.
    broker = Broker(tmp_path, extra_conf=(
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server_key']}\n"
        "require_certificate true\n"
        f"password_file {passwd}\n"
    ))
    # With a password file every listener needs credentials: let the test user in.
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "test", "test"], check=True)
    broker.start()
    yield broker, tls_port, pki
    broker.stop()


def site(port: int, pki: dict[str, Path], devices: list[dict[str, object]], ca: str = "ca") -> str:
    return yaml.safe_dump({
        "gateway": {"id": "gw-tls", "site": "lab"},
        "uplink": {"mqtt": {
            "url": f"mqtts://127.0.0.1:{port}", "username": "gw-tls",
            "password": "${env:EDGE_TEST_MQTT_PASSWORD}", "reconnect_max": "2s",
            "tls": {"ca": str(pki[ca]), "cert": str(pki["client"]), "key": str(pki["client_key"])},
        }},
        "devices": devices,
    })


async def run_agent(text: str, state: Path, until: object, what: str) -> Agent:
    agent = Agent(parse_site(text, "site.yaml"), state)
    task = asyncio.create_task(agent.run())
    try:
        await async_wait_until(until(agent), 60, what)  # type: ignore[operator]
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
    return agent


async def test_mutual_tls_with_password_delivers_data(
    tls_broker: tuple[Broker, int, dict[str, Path]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker, port, pki = tls_broker
    monkeypatch.setenv("EDGE_TEST_MQTT_PASSWORD", "s3cret-pw")
    async with contextlib.AsyncExitStack() as stack:
        devices = await simulate(stack, tmp_path)
        collector = Collector(broker, "m2m/lab/gw-tls/#")
        collector.client_kwargs = {"username": "test", "password": "test"}
        async with collector as col:
            await run_agent(site(port, pki, devices), tmp_path / "state",
                            lambda a: lambda: a.uplink.counters.acked >= 3, "data over TLS")
            await async_wait_until(lambda: col.json_payloads("/data/" + devices[0]["name"]), 30,
                                   "data at the subscriber")
            data = col.json_payloads("/data/" + devices[0]["name"])[0]
            assert data["gateway"] == "gw-tls" and data["samples"]


async def test_wrong_ca_is_refused_with_a_clear_log_line_and_no_secret(
    tls_broker: tuple[Broker, int, dict[str, Path]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    _, port, pki = tls_broker
    monkeypatch.setenv("EDGE_TEST_MQTT_PASSWORD", "s3cret-pw")
    caplog.set_level(logging.DEBUG)
    async with contextlib.AsyncExitStack() as stack:
        devices = await simulate(stack, tmp_path)
        agent = await run_agent(site(port, pki, devices, ca="other_ca"), tmp_path / "state",
                                lambda a: lambda: a.uplink.counters.errors >= 2
                                and a.buffer.stats.committed_samples > 0,
                                "refusals while readings are committed")
    assert agent.uplink.counters.acked == 0
    assert agent.buffer.stats.batches > 0, "readings stay in the buffer"
    down = [r.getMessage() for r in caplog.records
            if "uplink down" in r.getMessage() and r.levelno >= logging.ERROR]
    assert len(down) == 1, f"logged once per outage: {down}"
    assert "certificate verify failed" in down[0], down
    assert "s3cret-pw" not in caplog.text
    state = json.loads(json.dumps(agent.state("online")))
    assert "s3cret" not in json.dumps(state)
