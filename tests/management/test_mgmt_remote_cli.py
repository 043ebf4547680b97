"""``edge-agent remote`` as an operator runs it, against a running gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import yaml

from agent.config.store import save_last_good
from tests.conftest import Broker, async_wait_until, free_port
from tests.management.conftest import GATEWAY, SITE, Running, running_agent, site_dict

ROOT = Path(__file__).resolve().parents[2]


async def remote(broker: Broker | str, *args: str, gateway: str | None = GATEWAY,
                 extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    # Asynchronous: the gateway under test runs in this event loop.
    url = broker if isinstance(broker, str) else broker.url
    head = ["--broker", url, "--site", SITE, *extra]
    if gateway:
        head += ["--gateway", gateway]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli.main", "remote", *head, *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_commands(gateway: Running, broker: Broker, tmp_path: Path) -> None:
    await async_wait_until(lambda: gateway.agent.scheduler.runners["sim-press"]
                           .counters.connected, 30, "device connected")
    (ping, status, get, read, write, level, stats, unknown_tag, listing) = await asyncio.gather(
        remote(broker, "ping"),
        remote(broker, "status"),
        remote(broker, "config", "get"),
        remote(broker, "read", "sim-press", "setpoint", "cycles"),
        remote(broker, "write", "sim-press", "setpoint", "123"),
        remote(broker, "log-level", "info"),
        remote(broker, "--json", "buffer-stats"),
        remote(broker, "read", "sim-press", "ghost"),
        remote(broker, "list", gateway=None),
    )
    assert ping[0] == 0 and '"pong": true' in ping[1]
    assert status[0] == 0 and "status online" in status[1] and "sim-press" in status[1]
    assert get == (0, gateway.agent.site.text, "")
    assert read[0] == 0 and "setpoint" in read[1] and "cycles" in read[1] and "good" in read[1]
    assert write == (0, "sim-press.setpoint = 123 (read back)\n", "")
    assert level[0] == 0
    assert stats[0] == 0 and '"depth"' in stats[1]
    assert unknown_tag[0] == 1 and "no tag(s) ghost" in unknown_tag[2]
    assert listing[0] == 0
    row = next(line for line in listing[1].splitlines() if line.startswith(GATEWAY))
    assert "online" in row and gateway.agent.site.hash in row
    # Refused write: exit 1 with the guard's reason.
    code, _, err = await remote(broker, "write", "sim-press", "setpoint", "9999")
    assert code == 1 and "above max 500" in err


async def test_cli_config_push_shows_diff_and_errors(gateway: Running, broker: Broker,
                                                     tmp_path: Path) -> None:
    new = yaml.safe_load(gateway.site_text())
    new["devices"][0]["poll"] = "300ms"
    good = tmp_path / "new.yaml"
    good.write_text(yaml.safe_dump(new))
    code, out, err = await remote(broker, "config", "push", str(good))
    assert code == 0, err
    assert "--- gateway (running)" in out and "-  poll: 200ms" in out and "+  poll: 300ms" in out
    assert '"restarted": [\n      "sim-press"' in out
    assert gateway.agent.site.device("sim-press").poll == 0.3  # type: ignore[union-attr]

    new["devices"][0]["poll"] = "soon"
    new["buffer"]["max_sise"] = "1MB"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(new))
    code, out, err = await remote(broker, "config", "push", str(bad))
    assert code == 1, (out, err)
    assert "+  poll: soon" in out, (out, err)
    assert "devices[0].poll" in err and "buffer.max_sise" in err
    code, out, _ = await remote(broker, "config", "push", "--diff-only", str(bad))
    assert code == 0 and "+  poll: soon" in out
    assert gateway.agent.site.device("sim-press").poll == 0.3  # type: ignore[union-attr]


async def test_cli_signs_with_the_key_file_and_times_out(broker: Broker, tmp_path: Path) -> None:
    key = tmp_path / "command.key"
    key.write_text("k3y-for-cli\n")
    management = {"command_key": f"${{file:{key}}}"}
    async with running_agent(broker, tmp_path, devices=[], management=management):
        signed, unsigned, nobody = await asyncio.gather(
            remote(broker, "ping", extra=("--key-file", str(key))),
            remote(broker, "ping"),
            remote(broker, "ping", gateway="gw-nobody", extra=("--timeout", "1")),
        )
    assert signed[0] == 0, signed
    assert unsigned[0] == 1 and "not signed" in unsigned[2]
    assert nobody[0] == 3 and "no reply from m2m/lab/gw-nobody" in nobody[2]
    code, _, err = await remote(f"mqtt://127.0.0.1:{free_port()}", "ping")
    assert code == 4 and "broker" in err


async def test_start_with_a_broken_site_file_runs_last_good_and_says_so(
        broker: Broker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    good = yaml.safe_dump(site_dict(broker.url, []))
    save_last_good(state, good)
    site = tmp_path / "site.yaml"
    site.write_text(good.replace("metrics_interval", "metrics_intervall"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli.main", "run", "-c", str(site), "--state-dir", str(state),
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async def listed() -> str:
            code, out, _ = await remote(broker, "--json", "list", gateway=None)
            return out if code == 0 and '"online"' in out else ""

        await async_wait_until(listed, 60, "the gateway online")
        out = await listed()
        assert "metrics_intervall" in out and "config_error" in out
        code, table, _ = await remote(broker, "list", gateway=None)
        assert code == 0 and "config error" in table
        pong = await remote(broker, "ping")
        assert pong[0] == 0
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
