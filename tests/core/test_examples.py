"""The README's commands and the example sites cannot rot: they run here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Broker

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("site", CONFIGS, ids=[c.name for c in CONFIGS])
def test_example_site_passes_check(site: Path, tmp_path: Path) -> None:
    # Secret files named by the example are stood in for by files here.
    key = tmp_path / "command.key"
    key.write_text("k" * 32 + "\n")
    text = site.read_text().replace("/etc/edge-agent/command.key", str(key))
    copy = tmp_path / site.name
    copy.write_text(text)
    env = {**os.environ, "MQTT_PASSWORD": "pw", "OPCUA_PASSWORD": "pw"}
    result = subprocess.run([sys.executable, "-m", "agent.cli.main", "check", "-c", str(copy)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ok," in result.stdout


def test_modbus_only_site_never_imports_other_protocols(tmp_path: Path) -> None:
    code = (
        "import sys; from agent.config.load import load_site; "
        f"load_site({str(ROOT / 'configs/modbus-only.yaml')!r}); "
        "bad = [m for m in ('asyncua', 'serial', 'pymodbus') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "MQTT_PASSWORD": "pw"}, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_demo_shows_live_readings_and_publishes(broker: Broker, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "demo", "--duration", "8", "--broker", broker.url,
         "--workdir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    last_view = result.stdout.split("edge-agent demo")[-1]
    assert f"uplink {broker.url}: UP" in last_view
    for driver in ("modbus", "opcua", "serial"):
        assert f"[{driver}] up" in last_view, last_view
    acked = int(last_view.split("acked ")[1].split()[0])
    assert acked > 0


def test_a_running_modbus_agent_holds_no_parser_metadata_or_other_drivers(tmp_path: Path) -> None:
    """What validation needs stays in the validating child (issue 16: ~8 MB of imports)."""
    code = (
        "import sys; from pathlib import Path\n"
        "from agent.config.store import ConfigStore\n"
        "from agent.runtime.agent import Agent\n"
        "from agent.management import attach_management\n"
        f"site = ConfigStore(Path({str(tmp_path)!r}), "
        f"Path({str(ROOT / 'configs/modbus-only.yaml')!r})).load_site()\n"
        f"agent = Agent(site, Path({str(tmp_path)!r})); attach_management(agent)\n"
        "assert agent.scheduler.plugins['modbus'].name == 'modbus'\n"
        "held = [m for m in ('yaml', 'importlib.metadata', 'psutil', 'agent.config.load',\n"
        "                    'drivers.opcua.options', 'drivers.serial.options', 'asyncua')\n"
        "        if m in sys.modules]\n"
        "print(held); sys.exit(1 if held else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "MQTT_PASSWORD": "pw"}, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
