"""The whole deployment under a real systemd, in a Debian container.

Opt-in (EDGE_AGENT_SYSTEMD_SMOKE=1), because it needs root, network access
to Debian's and PyPI's package servers, debootstrap and systemd-nspawn
(apt-get install debootstrap systemd-container), and about three minutes:

    EDGE_AGENT_SYSTEMD_SMOKE=1 .venv/bin/pytest tests/deploy/test_deploy_systemd_container.py

It boots Debian 12 with systemd as PID 1 (the container shares the host's
network), builds an offline bundle of this tree, installs it for real
(user, unit, enable), and checks what the fast tests can only approximate:
READY=1 makes `systemctl start` return, STATUS= shows, WATCHDOG=1 pings
arrive every 15 s, `systemctl reload` goes through RELOADING=1, a frozen
agent is killed by the watchdog with its stacks in the journal and
restarted, an upgrade and a rollback restart the service, a version that
fails to start is rolled back by the installer, and uninstall keeps or
purges the data. The root file system is cached in
$EDGE_AGENT_ROOTFS (default /var/tmp/edge-agent-rootfs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROOTFS = Path(os.environ.get("EDGE_AGENT_ROOTFS", "/var/tmp/edge-agent-rootfs"))
ARCH = os.uname().machine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        os.environ.get("EDGE_AGENT_SYSTEMD_SMOKE") != "1",
        reason="opt-in: EDGE_AGENT_SYSTEMD_SMOKE=1 (root, network, debootstrap, systemd-nspawn)",
    ),
]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


class Container:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.init_pid = 0

    def find_init(self) -> bool:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        if pids:
            self.init_pid = int(pids[0])
        return bool(pids)

    def sh(self, cmd: str, check: bool = True, timeout: float = 300) -> str:
        proc = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", "/bin/sh", "-c", cmd],
            capture_output=True, text=True, timeout=timeout,
        )
        if check:
            assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    def show(self, prop: str) -> str:
        return self.sh(f"systemctl show edge-agent -p {prop} --value").strip()

    def journal(self, since: str = "") -> str:
        return self.sh(f"journalctl -u edge-agent --no-pager {since}", check=False)


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install debootstrap systemd-container)")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not (ROOTFS / "usr/lib/systemd/systemd").exists():
        subprocess.run(
            ["debootstrap", "--variant=minbase",
             "--include=systemd,systemd-sysv,dbus,python3,python3-venv,procps",
             "bookworm", str(ROOTFS), "http://deb.debian.org/debian"],
            check=True, capture_output=True, timeout=600,
        )
    proc = subprocess.Popen(
        ["systemd-nspawn", "-D", str(ROOTFS), "-b", "--register=no", "--keep-unit",
         "--console=passive", "-M", "edgeagenttest"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    box = Container(proc)
    try:
        wait_for(box.find_init, "the container's init")
        wait_for(
            lambda: box.sh("systemctl is-system-running", check=False).strip()
            in ("running", "degraded"),
            "systemd in the container",
        )
        # Leftovers of an interrupted earlier run.
        box.sh("test ! -x /opt/edge-agent/install.sh || "
               "/opt/edge-agent/install.sh --uninstall --purge")
        yield box
    finally:
        proc.send_signal(signal.SIGTERM)  # nspawn powers the container off
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


@pytest.fixture(scope="module")
def simulator() -> Iterator[list[dict[str, object]]]:
    code = (
        "import asyncio, contextlib, json, pathlib, tempfile\n"
        "from drivers.modbus.simulator import simulate\n"
        "async def main():\n"
        "    async with contextlib.AsyncExitStack() as stack:\n"
        "        print(json.dumps(await simulate(stack, pathlib.Path(tempfile.mkdtemp()))),"
        " flush=True)\n"
        "        await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(30)


def _bundle(out: Path, version: str | None = None) -> Path:
    src = REPO
    if version is not None:  # the committed tree under another version number
        src = out / f"src-{version}"
        src.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"],
                                 capture_output=True, check=True, timeout=120)
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True,
                       timeout=120)
        init = src / "agent/__init__.py"
        init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"',
                               init.read_text()))
    dest = out / (version or "base")
    subprocess.run(
        ["bash", str(REPO / "deploy/build-bundle.sh"), "--arch", ARCH, "--from", str(src),
         "--out", str(dest)],
        check=True, capture_output=True, timeout=600,
    )
    (bundle,) = [p for p in dest.iterdir() if p.is_dir()]
    return bundle


def test_real_systemd(container: Container, simulator: list[dict[str, object]],
                      tmp_path: Path, fake_wheel: Callable[..., Path]) -> None:
    c = container
    base = _bundle(tmp_path)
    newer = _bundle(tmp_path, "99.0.0")
    broken = tmp_path / "broken"
    fake_wheel(broken / "wheels", "99.1.0")  # `run` exits at once: never READY
    for name in ("install.sh", "edge-agent.service", "README.md", "site.yaml.example"):
        shutil.copy(REPO / "deploy" / name, broken / name)
    inside = ROOTFS / "root/bundles"
    shutil.rmtree(inside, ignore_errors=True)
    for b, name in ((base, "base"), (newer, "newer"), (broken, "broken")):
        shutil.copytree(b, inside / name)

    # Install for real: user, unit, enable; not started without a config.
    out = c.sh("/root/bundles/base/install.sh")
    assert "created system user edge-agent" in out
    assert c.sh("systemctl is-enabled edge-agent").strip() == "enabled"
    assert "dialout" in c.sh("id edge-agent")
    site = {
        "gateway": {"id": "gw-smoke", "site": "lab"},
        "uplink": {"mqtt": {"url": "mqtt://127.0.0.1:1", "username": "gw",
                            "password": "${env:MQTT_PASSWORD}"}},
        "devices": simulator,
    }
    (ROOTFS / "etc/edge-agent/site.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    with (ROOTFS / "etc/edge-agent/environment").open("a") as fh:
        fh.write("MQTT_PASSWORD=smoke-secret-5a1\n")

    # READY=1: start returns only when the agent says it is up.
    c.sh("systemctl start edge-agent")
    assert c.show("ActiveState") == "active"
    wait_for(lambda: "devices 1/1 up" in c.show("StatusText"), "STATUS= with the device up")
    first = int(c.show("WatchdogTimestampMonotonic"))
    wait_for(lambda: int(c.show("WatchdogTimestampMonotonic")) > first, "a WATCHDOG=1 ping", 40)
    journal = c.journal()
    assert "INFO app: edge-agent" in journal          # LEVEL component: message
    assert "smoke-secret-5a1" not in journal
    assert c.sh("journalctl -u edge-agent -p err --no-pager", check=False).count("INFO") == 0
    assert "exposure level for edge-agent.service: 1.5" in c.sh(
        "systemd-analyze security edge-agent --no-pager", check=False)

    # RELOADING=1 ... READY=1 on systemctl reload (SIGHUP), same process.
    pid = c.show("MainPID")
    c.sh("systemctl reload edge-agent")
    assert c.show("MainPID") == pid and "Reloaded edge-agent" in c.journal()

    # Installing again changes nothing and leaves the running agent alone.
    assert "already installed" in c.sh("/root/bundles/base/install.sh")
    assert c.show("MainPID") == pid

    # A frozen agent sends no pings: systemd aborts it (stacks in the
    # journal, from faulthandler) and restarts it.
    c.sh(f"kill -STOP {pid}")
    wait_for(lambda: c.show("NRestarts") == "1", "the watchdog restart", 120)
    wait_for(lambda: c.show("ActiveState") == "active", "the agent back up")
    journal = c.journal()
    assert "Watchdog timeout" in journal and "Fatal Python error: Aborted" in journal

    # Upgrade, then a version that never gets READY is rolled back by the installer.
    c.sh("/root/bundles/newer/install.sh --upgrade")
    assert c.sh("readlink /opt/edge-agent/current").strip() == "releases/99.0.0"
    wait_for(lambda: "edge-agent 99.0.0 started" in c.journal(), "the upgraded agent")
    out = c.sh("/root/bundles/broken/install.sh --upgrade", check=False)
    assert "rolling back to 99.0.0" in out
    assert c.sh("readlink /opt/edge-agent/current").strip() == "releases/99.0.0"
    assert c.sh("readlink /opt/edge-agent/previous").strip().startswith("releases/0.")
    assert c.show("ActiveState") == "active"
    c.sh("/opt/edge-agent/install.sh --rollback")
    assert c.sh("readlink /opt/edge-agent/current").strip().startswith("releases/0.")

    # Uninstall keeps config and data; --purge removes them and the user.
    c.sh("/opt/edge-agent/install.sh --uninstall")
    assert c.sh("systemctl is-active edge-agent", check=False).strip() == "inactive"
    c.sh("test -f /etc/edge-agent/site.yaml && test -d /var/lib/edge-agent")
    c.sh("/root/bundles/base/install.sh && /opt/edge-agent/install.sh --uninstall --purge")
    assert "no such user" in c.sh("id edge-agent", check=False)
