"""deploy/build-bundle.sh, offline: a local wheel index stands in for PyPI.

The agent stand-in depends on a pure-Python package and on a compiled one
that has a wheel for this machine's CPU only, so the bundle is complete for
this architecture and reports the other one as missing, as a real
dependency without an aarch64 wheel would be.  Then install.sh, run from
inside the unpacked bundle, installs it into a temporary root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
HOST = os.uname().machine
OTHER = "aarch64" if HOST == "x86_64" else "x86_64"
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
CPTAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"

pytestmark = pytest.mark.skipif(
    HOST not in ("x86_64", "aarch64"), reason="bundle tests expect an x86_64 or aarch64 host"
)


def _env() -> dict[str, str]:
    # No pip settings of the developer's (indexes, caches) leak in.
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}


def build(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY / "build-bundle.sh"), "--python", sys.executable,
         "--python-version", PY, "--no-index", *map(str, args)],
        capture_output=True, text=True, timeout=300, env=_env(),
    )


@pytest.fixture
def index(tmp_path: Path, fake_wheel: Callable[..., Path]) -> tuple[Path, Path]:
    links = tmp_path / "index"
    agent = fake_wheel(tmp_path / "agent", "1.2.0",
                       requires=("edge-fake-pure>=1", "edge-fake-native"))
    fake_wheel(links, "1.0", name="edge-fake-pure")
    fake_wheel(links, "2.0", name="edge-fake-native",
               tag=f"{CPTAG}-{CPTAG}-manylinux2014_{HOST}")
    return agent, links


def test_bundle_complete_for_host_reports_missing_other(tmp_path: Path, index: tuple[Path, Path]) -> None:
    agent, links = index
    out = tmp_path / "out"
    proc = build("--from", agent, "--find-links", links, "--out", out,
                 "--arch", HOST, "--arch", OTHER)
    assert proc.returncode != 0, "a bundle lacking wheels must not pass silently"
    assert f"edge-fake-native==2.0: NO {OTHER} WHEEL" in proc.stdout
    name = f"edge-agent-1.2.0-py{PY}-{HOST}-{OTHER}"
    missing = (out / name / "MISSING.txt").read_text()
    assert f"{OTHER}: edge-fake-native==2.0" in missing
    assert f"{HOST}: \n" in missing

    proc = build("--from", agent, "--find-links", links, "--out", out,
                 "--arch", HOST, "--arch", OTHER, "--allow-missing")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = (out / name / "bundle.env").read_text()
    assert f"ARCHES={HOST}\n" in env and f"PYTHON_VERSION={PY}\n" in env
    pins = sorted((out / name / "requirements.txt").read_text().split())
    assert pins == ["edge-fake-native==2.0", "edge-fake-pure==1.0"]


def test_bundle_installs_offline_from_its_own_directory(
    tmp_path: Path, index: tuple[Path, Path]
) -> None:
    agent, links = index
    out = tmp_path / "out"
    proc = build("--from", agent, "--find-links", links, "--out", out, "--arch", HOST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name = f"edge-agent-1.2.0-py{PY}-{HOST}"
    wheels = sorted(p.name for p in (out / name / "wheels").iterdir())
    assert wheels == sorted([
        "m2m_edge_agent-1.2.0-py3-none-any.whl",
        "edge_fake_pure-1.0-py3-none-any.whl",
        f"edge_fake_native-2.0-{CPTAG}-{CPTAG}-manylinux2014_{HOST}.whl",
    ])
    sums = (out / name / "SHA256SUMS").read_text()
    assert all(w in sums for w in wheels)

    # What a technician does: unpack the tarball, run its install.sh.
    site = tmp_path / "site"
    with tarfile.open(out / f"{name}.tar.gz") as tar:
        tar.extractall(site, filter="data")
    root = tmp_path / "root"
    proc = subprocess.run(
        ["bash", str(site / name / "install.sh"), "--python", sys.executable, "--root", root],
        capture_output=True, text=True, timeout=300, env=_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    venv = root / "opt/edge-agent/venv"
    assert os.readlink(root / "opt/edge-agent/current") == "releases/1.2.0"
    check = subprocess.run(
        [venv / "bin/python", "-I", "-c", "import edge_fake_native, edge_fake_pure"],
        capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert (root / "etc/systemd/system/edge-agent.service").is_file()
