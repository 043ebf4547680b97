"""A broker ACL that confines each gateway user to its own ``m2m/<site>/<gateway>/#``.

The gateway must work inside that box (data, state, replies on the response
topic the operator's CLI chooses), and a neighbouring gateway's credentials
must not be able to command it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli.remote.client import BrokerOptions, RemoteClient, RemoteTimeout
from tests.conftest import Broker, async_wait_until
from tests.management.conftest import SITE, running_agent

PASSWORDS = {"operator": "op-pass", "gw-a": "a-pass", "gw-b": "b-pass"}


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Broker]:
    passwd = tmp_path / "passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        flags = ["-c"] if i == 0 else []
        subprocess.run(["/usr/bin/mosquitto_passwd", *flags, "-b", str(passwd), user, password],
                       check=True, capture_output=True)
    acl = tmp_path / "acl"
    acl.write_text(
        # The operator sees the whole site.
        f"user operator\ntopic readwrite m2m/{SITE}/#\n\n"
        # Every other user (a gateway, named after its id) only its own subtree.
        f"pattern readwrite m2m/{SITE}/%u/#\n"
    )
    broker = Broker(tmp_path, extra_conf=(
        f"password_file {passwd}\nacl_file {acl}\nlog_type all\n"))
    # Later lines win in mosquitto.conf: anonymous clients are refused.
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true",
                                                           "allow_anonymous false"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _creds(tmp_path: Path, user: str) -> dict[str, str]:
    secret = tmp_path / f"{user}.pass"
    secret.write_text(PASSWORDS[user])
    return {"username": user, "password": f"${{file:{secret}}}"}


def _options(broker: Broker, user: str) -> BrokerOptions:
    return BrokerOptions(url=broker.url, username=user, password=PASSWORDS[user])


async def test_gateway_works_inside_its_subtree_and_neighbours_cannot_command_it(
        acl_broker: Broker, tmp_path: Path) -> None:
    async with running_agent(acl_broker, tmp_path, gateway="gw-a",
                             mqtt=_creds(tmp_path, "gw-a")) as gw_a:
        await async_wait_until(lambda: gw_a.agent.uplink.counters.acked >= 3, 30,
                               "gw-a's data acknowledged under the ACL")
        operator = RemoteClient(_options(acl_broker, "operator"), site=SITE, gateway="gw-a")
        async with operator as rc:
            assert (await rc.call("ping"))["ok"]
            read = await rc.call("read", {"device": "sim-press", "tags": ["setpoint"]})
            assert read["ok"], read
            assert read["result"]["samples"][0]["values"]["setpoint"] == 250

        # gw-b's credentials: its publishes to gw-a's command topic are denied.
        neighbour = RemoteClient(_options(acl_broker, "gw-b"), site=SITE, gateway="gw-a")
        async with neighbour as rc:
            with pytest.raises(RemoteTimeout):
                await rc.call("restart", wait=2)
        log = acl_broker.workdir / "mosquitto.log"
        await async_wait_until(lambda: "Denied PUBLISH from edge-remote-" in log.read_text(), 30,
                               "the broker's denial")
        assert not gw_a.task.done(), "gw-a obeyed a command from gw-b's credentials"
        again = RemoteClient(_options(acl_broker, "operator"), site=SITE, gateway="gw-a")
        async with again as rc:
            assert (await rc.call("ping"))["ok"]
