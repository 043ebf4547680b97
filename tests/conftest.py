"""Shared fixtures: a real Mosquitto per test on a free port, and waiting helpers.

The machine's own broker on port 1883 is never touched.
"""

from __future__ import annotations

import asyncio
import copy
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

# CI machines and containers often run without the kernel's NTP discipline, so
# adjtimex says "unsynchronised" forever and every sample would carry
# "clock": "unsynced".  Tests of the clock inject their own source; everything
# else (agents started in-process or as subprocesses) trusts the clock.
os.environ.setdefault("EDGE_AGENT_CLOCK", "trusted")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def async_wait_until(cond: Callable[[], object], timeout: float = 30.0,
                           what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cond()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def fast(devices: list[dict[str, Any]], poll: str = "200ms") -> list[dict[str, Any]]:
    """Copies of simulator device entries polled faster, for quicker tests."""
    out = copy.deepcopy(devices)
    for d in out:
        d["poll"] = poll
    return out


class Broker:
    """A private Mosquitto that tests stop and start at will (same port)."""

    def __init__(self, workdir: Path, extra_conf: str = "") -> None:
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # Persistence keeps the test subscriber's session across a restart,
            # so what the agent sends while the subscriber reconnects is queued.
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
            "max_inflight_messages 100\n"
            # Replies are small packets; without it each waits ~40 ms for a delayed ACK.
            "set_tcp_nodelay true\n"
            # As root, mosquitto would switch to its own user, which cannot read
            # the test's private temp dir (log, password and ACL files).
            + ("user root\n" if os.geteuid() == 0 else "")
            + extra_conf
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        if shutil.which(MOSQUITTO) is None and not Path(MOSQUITTO).exists():
            pytest.fail("mosquitto is not installed: run ./dev.sh test, which installs it")
        out = open(self.workdir / "mosquitto.out", "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=out, stderr=out)
        out.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                text = (self.workdir / "mosquitto.out").read_text(errors="replace")
                raise AssertionError(f"mosquitto exited {self.proc.returncode}: {text}")
            return port_open(self.port)

        wait_until(up, 20, f"mosquitto on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        wait_until(lambda: not port_open(self.port), 20, "mosquitto to stop")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Collector:
    """A test-side MQTT subscriber that survives broker restarts (persistent session)."""

    def __init__(self, broker: Broker, topic: str, client_id: str = "test-collector") -> None:
        self.broker = broker
        self.topic = topic
        self.client_id = client_id
        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.client_kwargs: dict[str, object] = {}

    async def _run(self) -> None:
        import aiomqtt

        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.broker.port,
                                          identifier=self.client_id, clean_session=False,
                                          **self.client_kwargs) as c:  # type: ignore[arg-type]
                    await c.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for msg in c.messages:
                        payload = msg.payload if isinstance(msg.payload, bytes) else b""
                        self.messages.append((str(msg.topic), payload, bool(msg.retain)))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def json_payloads(self, suffix: str = "") -> list[dict[str, Any]]:
        import json

        return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix) and p]
