"""`edge-agent run` under a (simulated) systemd: a real notify socket, real signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from drivers.modbus.simulator import simulate
from tests.conftest import Broker, async_wait_until

ROOT = Path(__file__).resolve().parents[2]


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        return self.messages

    def seen(self, field: str) -> int:
        return sum(1 for m in self.drain() for line in m.splitlines() if line.startswith(field))


async def test_ready_watchdog_reload_and_stop(broker: Broker, tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    async with contextlib.AsyncExitStack() as stack:
        devices = await simulate(stack, tmp_path)
        site = tmp_path / "site.yaml"
        site_obj = {"gateway": {"id": "gw-sd", "site": "lab"},
                    "uplink": {"mqtt": {"url": broker.url}}, "devices": devices}
        site.write_text(yaml.safe_dump(site_obj))
        env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000",
               "WATCHDOG_PID": ""}
        log = open(tmp_path / "agent.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli.main", "run", "-c", str(site), "--state-dir",
             str(tmp_path / "state")], cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            await async_wait_until(lambda: notify.seen("READY=1") == 1, 60, "READY=1")
            assert notify.seen("STATUS=") >= 1
            # The watchdog pings every half interval while every loop makes progress.
            await async_wait_until(lambda: notify.seen("WATCHDOG=1") >= 3, 30, "WATCHDOG=1 pings")
            # SIGHUP reloads: a changed poll period restarts the device, READY again.
            devices[0]["poll"] = "2s"
            site.write_text(yaml.safe_dump(site_obj))
            proc.send_signal(signal.SIGHUP)
            await async_wait_until(lambda: notify.seen("RELOADING=1") == 1, 30, "RELOADING=1")
            await async_wait_until(lambda: notify.seen("READY=1") == 2, 30, "READY=1 after reload")
            assert any("MONOTONIC_USEC=" in m for m in notify.messages if "RELOADING=1" in m)
            # An invalid file on SIGHUP keeps the running config.
            site.write_text("gateway: [\n")
            proc.send_signal(signal.SIGHUP)
            await async_wait_until(lambda: notify.seen("READY=1") == 3, 30, "READY after refusal")
            assert proc.poll() is None, "a bad reload must not stop the agent"
            pings = notify.seen("WATCHDOG=1")
            await async_wait_until(lambda: notify.seen("WATCHDOG=1") > pings, 30, "still pinging")
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            assert proc.wait(20) == 0
            assert time.monotonic() - t0 < 10, "SIGTERM must stop within a few seconds"
            assert notify.seen("STOPPING=1") == 1
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    text = (tmp_path / "agent.log").read_text()
    assert "reload refused" in text
