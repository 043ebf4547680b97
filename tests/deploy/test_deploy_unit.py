"""deploy/edge-agent.service through systemd's own checker.

systemd is not PID 1 in CI, so the unit is verified offline inside a
temporary root that holds systemd's stock units, the unit and stand-ins
for the binaries it runs (verify checks they are executable).
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "edge-agent.service"
ANALYZE = shutil.which("systemd-analyze")
STOCK_UNITS = Path("/usr/lib/systemd/system")

# The score recorded in deploy/README.md; a change that weakens the
# hardening fails here instead of slipping through.
RECORDED_EXPOSURE = 1.5

needs_analyze = pytest.mark.skipif(
    ANALYZE is None or not STOCK_UNITS.is_dir(),
    reason="systemd-analyze or systemd's stock units not installed (apt-get install systemd)",
)


def _unit_keys(text: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def _root(tmp_path: Path, unit_text: str) -> Path:
    root = tmp_path / "root"
    shutil.copytree(STOCK_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/edge-agent.service").write_text(unit_text)
    for exe in ("opt/edge-agent/venv/bin/edge-agent", "bin/kill"):
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", f"--root={root}", "edge-agent.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    proc = _verify(_root(tmp_path, UNIT.read_text()))
    # systemd-analyze exits 0 even for keys it ignores: any output is a defect.
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stderr


@needs_analyze
def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check above can fail: a typo in a key produces output."""
    broken = UNIT.read_text().replace("Restart=always", "Restart=alwayz")
    proc = _verify(_root(tmp_path, broken))
    assert "alwayz" in proc.stderr


@needs_analyze
def test_security_exposure_as_recorded(tmp_path: Path) -> None:
    assert ANALYZE is not None
    root = _root(tmp_path, UNIT.read_text())
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=true", f"--root={root}", "--no-pager",
         "edge-agent.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for edge-agent\.service: ([\d.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= RECORDED_EXPOSURE
    readme = (DEPLOY / "README.md").read_text()
    assert f"exposure level {RECORDED_EXPOSURE}" in readme


def test_unit_contract() -> None:
    """What the agent and install.sh rely on, independent of systemd."""
    keys = _unit_keys(UNIT.read_text())
    single = {k: v[-1] for k, v in keys.items()}
    assert single["Type"] == "notify"
    assert single["NotifyAccess"] == "main"
    assert single["Restart"] == "always"
    assert single["ExecStart"] == (
        "/opt/edge-agent/venv/bin/edge-agent run -c /etc/edge-agent/site.yaml"
    )
    assert single["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert single["User"] == "edge-agent"
    assert single["SupplementaryGroups"] == "dialout"
    assert single["StateDirectory"] == "edge-agent"
    assert single["ConfigurationDirectory"] == "edge-agent"
    assert single["CapabilityBoundingSet"] == ""
    assert single["ProtectSystem"] == "strict"
    assert single["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert "@system-service" in keys["SystemCallFilter"]
    assert {"char-ttyUSB rw", "char-ttyACM rw", "char-ttyS rw"} <= set(keys["DeviceAllow"])
    for flag in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert single[flag] == "yes"
    # The watchdog must outlast the agent's ping period with margin, and the
    # stop timeout must leave time for a buffer flush.
    assert single["WatchdogSec"].endswith("s") and int(single["WatchdogSec"][:-1]) >= 10
    # And it is an INI file configparser understands (no stray syntax).
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]


def test_example_site_loads_through_the_real_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.config.load import parse_site

    monkeypatch.setenv("MQTT_PASSWORD", "example")
    example = DEPLOY / "site.yaml.example"
    site = parse_site(example.read_text(), str(example))
    assert [d.name for d in site.devices] == ["press-1", "drive-7"]
    assert site.config.uplink.mqtt.password is not None
