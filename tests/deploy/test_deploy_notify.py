"""sd_notify and the watchdog against a real unix datagram socket.

The socket plays systemd: it receives exactly the datagrams systemd would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.systemd import Notifier, Watchdog, watchdog_interval_from_env


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)

    def recv(self, timeout: float = 10.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def pending(self) -> list[dict[str, str]]:
        """Everything received so far, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                out.append(dict(line.split("=", 1) for line in data.split("\n")))
        except BlockingIOError:
            return out
        finally:
            self.sock.setblocking(True)


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(tmp_path / "notify.sock"))
    yield fake
    fake.sock.close()


def test_ready_status_stopping_in_order(systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.address)
    n = Notifier.from_env()
    assert n.enabled
    assert n.ready()
    assert n.status("3 devices\nuplink   connected")
    assert n.stopping()
    assert systemd.recv() == {"READY": "1"}
    # One line: a newline would end the STATUS field and start a bogus one.
    assert systemd.recv() == {"STATUS": "3 devices uplink connected"}
    assert systemd.recv() == {"STOPPING": "1"}


def test_reloading_carries_monotonic_usec(systemd: FakeSystemd) -> None:
    n = Notifier(systemd.address)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    msg = systemd.recv()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after


def test_abstract_socket_address() -> None:
    name = f"@edge-agent-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(name)
    try:
        n = Notifier(name)
        assert n.ready()
        assert fake.recv() == {"READY": "1"}
    finally:
        fake.sock.close()


def test_noop_without_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier.from_env()
    assert not n.enabled
    assert not n.ready()
    assert not n.watchdog()


def test_send_failure_never_raises(tmp_path: Path) -> None:
    # systemd gone (socket path without a listener): the agent carries on.
    n = Notifier(str(tmp_path / "nobody.sock"))
    assert n.enabled
    assert not n.ready()


def test_watchdog_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_from_env() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_from_env() == 30.0
    # Inherited from a parent: not ours to feed.
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval_from_env() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval_from_env() is None


async def test_watchdog_inactive_returns_at_once(systemd: FakeSystemd) -> None:
    wd = Watchdog(Notifier(systemd.address), None)
    assert not wd.active
    await asyncio.wait_for(wd.run(), 5)
    assert systemd.pending() == []


def test_stale_heartbeat_withholds_ping_with_a_clock() -> None:
    """The decision itself, with a fake clock (time is the only fake)."""
    now = [100.0]
    sent: list[str] = []

    class Recorder(Notifier):
        def notify(self, *fields: str) -> bool:
            sent.extend(fields)
            return True

    wd = Watchdog(Recorder(None), 10.0, clock=lambda: now[0])
    poll = wd.heartbeat("device press-1", stale_after=3.0)
    wd.heartbeat("uplink", stale_after=20.0)
    assert wd.check() and sent == ["WATCHDOG=1"]
    now[0] += 2.9
    assert wd.check()
    now[0] += 0.2  # press-1 is now 3.1 s without progress
    assert not wd.check()
    assert wd.stale() == ["device press-1"]
    assert sent[-1] == "STATUS=watchdog: stalled loops: device press-1"
    poll()
    assert wd.check() and sent[-1] == "WATCHDOG=1"
    wd.unregister("device press-1")
    now[0] += 10
    assert wd.check()
    now[0] += 11  # uplink 21 s
    assert wd.stale() == ["uplink"]


async def test_watchdog_stops_when_a_loop_hangs(
    systemd: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    """Two real loops; one hangs: the pings stop and the log names it."""
    wd = Watchdog(Notifier(systemd.address), 0.2)  # ping every 0.1 s
    hang = asyncio.Event()

    async def loop(name: str) -> None:
        beat = wd.heartbeat(name, stale_after=0.5)
        while True:
            if name == "poll press-1" and hang.is_set():
                await asyncio.Event().wait()  # stuck in a driver call
            beat()
            await asyncio.sleep(0.02)

    caplog.set_level(logging.INFO, logger="agent.systemd")
    tasks = [
        asyncio.create_task(loop("poll press-1")),
        asyncio.create_task(loop("uplink")),
        asyncio.create_task(wd.run()),
    ]
    try:
        loop_ = asyncio.get_running_loop()
        # Healthy: pings arrive.
        deadline = loop_.time() + 20
        while wd.pings < 3:
            assert loop_.time() < deadline, "no watchdog pings while healthy"
            await asyncio.sleep(0.02)
        hang.set()
        deadline = loop_.time() + 20
        while "no progress from poll press-1" not in caplog.text:
            assert loop_.time() < deadline, "stale loop never reported"
            await asyncio.sleep(0.02)
        pings_when_stale = wd.pings
        received = systemd.pending()
        assert {"WATCHDOG": "1"} in received
        assert received[-1] == {"STATUS": "watchdog: stalled loops: poll press-1"}
        # Several ping periods later still nothing was sent.
        await asyncio.sleep(0.5)
        assert wd.pings == pings_when_stale
        assert systemd.pending() == []
        assert "uplink" not in caplog.text.split("no progress from", 1)[1]
        # Logged once per outage, not once per period.
        assert caplog.text.count("no progress from") == 1
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
