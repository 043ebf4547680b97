"""``/api/status``, the token rules, reload, and that a site without ``http:``
never loads the HTTP code."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Broker, async_wait_until, free_port
from tests.http.conftest import Running, get, running_agent

ROOT = Path(__file__).resolve().parents[2]


async def test_api_status_is_the_status_result_plus_page_data(running: Running) -> None:
    reply = await get(running.base + "/api/status")
    assert reply.headers["content-type"] == "application/json"
    d = reply.json()
    assert d["status"] == "online" and d["config_hash"] == running.agent.site.hash
    assert d["gateway"] == {"id": "gw-http", "site": "lab"}
    assert d["broker"] == f"127.0.0.1:{running.broker.port}"
    assert d["uplink"]["connected"] is True and d["uplink"]["connected_since_ms"] > 0
    assert d["devices"]["sim-press"]["connected"] is True
    assert d["devices"]["dead-1"]["connected"] is False
    assert "cannot connect" in d["devices"]["dead-1"]["last_error"]
    assert isinstance(d["latest"]["sim-press"]["values"]["cycles"], int)
    assert d["latest"]["dead-1"]["values"]["cycles"] is None
    assert d["device_info"]["sim-press"] == {"driver": "modbus", "poll_s": 0.2,
                                             "units": {"oil_temp": "degC"}}
    assert "depth" in d["buffer"]
    assert any("dead-1 down" in p["message"] and p["level"] == "error" for p in d["problems"])
    assert d["alarms"] == {}  # no device has an active alarm


async def test_read_only_and_unknown_paths(running: Running) -> None:
    assert (await get(running.base + "/api/status", method="POST")).status == 405
    assert (await get(running.base + "/nope")).status == 404
    head = await get(running.base + "/metrics", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) > 100


async def test_token_rules(broker: Broker, tmp_path: Path,
                           caplog: pytest.LogCaptureFixture) -> None:
    token = "t0ken-" + "x" * 20
    (tmp_path / "http.token").write_text(token + "\n")
    caplog.set_level(logging.DEBUG)
    async with running_agent(broker, tmp_path,
                             {"token": f"${{file:{tmp_path / 'http.token'}}}"}) as r:
        await async_wait_until(lambda: _up(r.base + "/metrics"), 30, "the endpoint")
        refused = [
            await get(r.base + "/metrics"),
            await get(r.base + "/"),
            await get(r.base + "/api/status?token=wrong"),
            await get(r.base + "/metrics", {"Authorization": "Bearer " + token[:-1] + "y"}),
            await get(r.base + "/metrics", {"Authorization": "Basic " + token}),
        ]
        assert [x.status for x in refused] == [401] * 5
        assert refused[0].headers["www-authenticate"].startswith("Bearer")
        assert token.encode() not in b"".join(x.body for x in refused)
        # A browser's favicon request carries no token: not a refusal to count.
        assert (await get(r.base + "/favicon.ico")).status == 204
        ok_bearer = await get(r.base + "/metrics", {"Authorization": f"Bearer {token}"})
        ok_query = await get(r.base + f"/api/status?token={token}")
        assert (ok_bearer.status, ok_query.status) == (200, 200)
        metrics = ok_bearer.body.decode()
        # The five refused above and the one that found the endpoint up.
        line = next(x for x in metrics.splitlines()
                    if x.startswith("edge_agent_http_unauthorized_total "))
        assert float(line.split()[1]) == 6
        page = await get(r.base + f"/?token={token}")
        assert page.status == 200 and b"sim-press" in page.body
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert token not in logged


async def _up(url: str) -> bool:
    try:
        return (await get(url)).status in (200, 401)
    except OSError:
        return False


async def test_reload_with_changed_http_restarts_the_server(running: Running) -> None:
    agent = running.agent
    new_port = free_port()
    await agent.apply_site(running.site({"listen": f"127.0.0.1:{new_port}"}))
    new_base = f"http://127.0.0.1:{new_port}"
    await async_wait_until(lambda: _up(new_base + "/metrics"), 30, "the new port")
    assert not await _up(running.base + "/metrics")
    # Removing http: stops it; the agent keeps running.
    await agent.apply_site(running.site(None))
    await async_wait_until(lambda: _down(new_base), 30, "the endpoint to stop")
    assert agent.scheduler.runners["sim-press"].counters.connected


async def _down(base: str) -> bool:
    return not await _up(base + "/metrics")


async def test_port_in_use_is_retried_not_fatal(broker: Broker, tmp_path: Path) -> None:
    squatter = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = squatter.sockets[0].getsockname()[1]
    async with running_agent(broker, tmp_path, {"listen": f"127.0.0.1:{port}"}) as r:
        await async_wait_until(lambda: r.agent.scheduler.runners["sim-press"].counters.polls >= 2,
                               30, "polling despite the taken port")
        squatter.close()
        await squatter.wait_closed()
        # The supervisor retries (2 s, then doubling) and gets the port.
        await async_wait_until(lambda: _up(r.base + "/metrics"), 30, "the endpoint after retry")


LAZY = """
import asyncio, sys
from agent.config.load import parse_site
from agent.runtime.agent import Agent
site = parse_site('''
gateway: {id: gw, site: s}
uplink: {mqtt: {url: "mqtt://127.0.0.1:%d"}}
''')
async def main():
    agent = Agent(site, __import__("pathlib").Path(sys.argv[1]))
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(1)
    agent.stop()
    await task
asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith(("prometheus_client", "agent.runtime.http."))))
"""


def test_without_http_nothing_is_imported(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", LAZY % free_port(), str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
