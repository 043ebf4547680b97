"""MQTT 3.1.1 end to end against NATS's MQTT server (which refuses MQTT 5).

One private nats-server per test (JetStream, free loopback ports); the
three-node cluster test kills a node mid-stream.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
import yaml

from agent.cli.remote.client import BrokerOptions, RemoteClient
from agent.config.model import MqttConfig
from tests.brokers.helpers import BASE, Stream, at, states
from tests.brokers.nats import Nats
from tests.conftest import Broker, Collector, async_wait_until, free_port
from tests.management.conftest import BASE as BASE_MGMT
from tests.management.conftest import GATEWAY, SITE, running_agent
from tests.management.test_mgmt_remote_cli import remote


def cut_link(stream: Stream) -> None:
    """Drop the TCP link under the session without a DISCONNECT, as a dead network does."""
    client = stream.uplink._client
    assert client is not None
    sock = client._client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)


async def test_auto_falls_back_to_311_and_data_state_will_work(
    nats: Nats, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agent.uplink")
    stream = Stream(tmp_path, MqttConfig(url=nats.url, reconnect_max=1.0, max_inflight=4))
    async with Collector(at(nats.mqtt_port), f"{BASE}/#", "col-solo") as col, \
            stream.running():
        up = stream.uplink
        await async_wait_until(lambda: up.counters.acked >= 20, 30, "data acked over 3.1.1")
        cut_link(stream)
        await async_wait_until(lambda: any(s["status"] == "offline" for s in states(col)), 30,
                               "the will, published by NATS")
        await async_wait_until(lambda: up.counters.reconnects >= 2 and up.connected.is_set(),
                               30, "the reconnect")
        await async_wait_until(lambda: states(col)[-1]["status"] == "online", 30, "online again")
        await stream.finish(col)
    refusals = [r for r in caplog.records if "refuses MQTT 5" in r.getMessage()]
    assert len(refusals) == 1, "the fallback must be learned once and kept for reconnects"
    assert states(col)[-1]["broker"] == nats.url
    # Retained: a newcomer gets the state at once.
    async with Collector(at(nats.mqtt_port), f"{BASE}/state", "col-late") as late:
        await async_wait_until(lambda: late.messages, 30, "the retained state")
        assert late.messages[0][2], "state is not retained"
        assert states(late)[-1]["status"] == "online"


async def test_protocol_5_on_a_311_broker_says_why(nats: Nats, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    stream = Stream(tmp_path, MqttConfig(url=nats.url, protocol="5", reconnect_max=1.0))
    async with stream.running():
        await async_wait_until(lambda: stream.uplink.counters.errors >= 1, 30, "a refusal")
        assert not stream.uplink.connected.is_set()
    assert "Unsupported protocol version" in (stream.uplink.counters.last_error or "")


async def test_commands_and_remote_cli_on_nats(nats: Nats, tmp_path: Path) -> None:
    # NATS 2.9 refuses '.' in MQTT topics ("characters ' ' and '.' not supported"),
    # so cmd/config.apply cannot reach a gateway through it: ping, status and the
    # CLI here; config push and rollback over 3.1.1 are proven on Mosquitto below.
    target = Broker.__new__(Broker)  # running_agent and the CLI only need the url
    target.port = nats.mqtt_port
    async with running_agent(target, tmp_path) as gw, gw.client() as rc:
        assert not rc.v5, "the client should have fallen back to 3.1.1"
        ping = await rc.call("ping")
        assert ping["ok"] and ping["result"]["pong"] is True
        status = await rc.call("status")
        assert status["ok"] and status["result"]["status"] == "online", status
        code, out, err = await remote(nats.url, "ping")
        assert code == 0 and '"pong": true' in out, err
        code, out, err = await remote(nats.url, "list", gateway=None)
        assert code == 0 and GATEWAY in out, err


async def test_config_push_and_rollback_over_311(broker: Broker, tmp_path: Path) -> None:
    async with Collector(broker, f"{BASE_MGMT}/state", "col-rb") as col, \
            running_agent(broker, tmp_path, mqtt={"protocol": "3.1.1"}) as gw, \
            RemoteClient(BrokerOptions(url=broker.url, protocol="3.1.1"), site=SITE,
                         gateway=GATEWAY) as rc:
        assert not rc.v5
        code, out, err = await remote(broker, "config", "get", extra=("--protocol", "3.1.1"))
        assert code == 0 and "3.1.1" in out, err
        good = gw.agent.site.hash
        bad = yaml.safe_load(gw.site_text(protocol="3.1.1"))
        bad["uplink"]["mqtt"]["url"] = f"mqtt://127.0.0.1:{free_port()}"
        bad["management"]["rollback_after"] = "5s"
        reply = await rc.call("config.apply", {"yaml": yaml.safe_dump(bad)})
        assert reply["ok"], reply
        # The rollback is reported before the good site is re-applied: wait for both.
        await async_wait_until(lambda: gw.agent.report.rollback is not None
                               and gw.agent.site.hash == good, 40, "the rollback")
        await async_wait_until(lambda: any("rollback" in s for s in states(col)), 30,
                               "the rollback on state")
        assert (await rc.call("ping", wait=20))["ok"]
        confirmed = gw.site_text(keepalive="31s", protocol="3.1.1")
        reply = await rc.call("config.apply", {"yaml": confirmed})
        assert reply["ok"], reply
        await async_wait_until(lambda: not gw.agent.lifecycle.pending, 30, "the push confirmed")


@pytest.mark.slow
async def test_cluster_node_killed_mid_stream_nothing_lost(
    nats_cluster: list[Nats], tmp_path: Path
) -> None:
    n0, n1, n2 = nats_cluster
    stream = Stream(tmp_path, MqttConfig(url=[n0.url, n1.url, n2.url], reconnect_max=1.0,
                                         max_inflight=8))
    # The subscriber sits on a node that survives; its session is in JetStream.
    async with Collector(at(n2.mqtt_port), f"{BASE}/#", "col-cluster") as col, \
            stream.running():
        up = stream.uplink
        await async_wait_until(lambda: up.counters.acked >= 30, 60, "data via node 0")
        assert up.endpoint.url == n0.url
        assert states(col)[-1]["broker"] == n0.url
        before = up.counters.acked
        t0 = time.monotonic()
        n0.kill()
        await async_wait_until(lambda: up.counters.acked >= before + 20, 90,
                               "data flowing through another node")
        failover = time.monotonic() - t0
        # Node 1 first; node 2 when node 1 is still electing its JetStream leaders.
        assert up.endpoint.url in (n1.url, n2.url)
        await async_wait_until(lambda: states(col)[-1].get("broker") == up.endpoint.url, 30,
                               "state names the new broker")
        await stream.finish(col, timeout=90)
    assert failover < 75, f"failover took {failover:.1f} s"
