"""`edge-agent run` refuses to start with messages a technician can act on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

GOOD = """gateway: {id: gw-1, site: plant-2}
uplink:
  mqtt: {url: "mqtt://127.0.0.1:1"}
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli.main", "run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_invalid_site_without_last_good_exits_1_listing_every_problem(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(GOOD.replace("site: plant-2", "site: plant-2, color: red") + "bufer: {}\n")
    result = run("-c", str(site), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1
    assert f"{site}:1: gateway.color: unknown key 'color'" in result.stderr
    assert f"{site}:4: bufer: unknown key 'bufer'; did you mean 'buffer'?" in result.stderr
    assert "not starting" in result.stderr and "edge-agent check" in result.stderr


def test_missing_site_file_exits_1(tmp_path: Path) -> None:
    result = run("-c", str(tmp_path / "nope.yaml"), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1
    assert "nope.yaml:1: (top): cannot read: No such file or directory" in result.stderr


def test_unwritable_state_dir_exits_1(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(GOOD)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run("-c", str(site), "--state-dir", str(blocker / "state"))
    assert result.returncode == 1
    assert "cannot write the state directory" in result.stderr
