"""deploy/install.sh into a temporary root: install twice, upgrade, roll back,
refuse a version that rejects the config, recover a half-built release,
uninstall.  Real venvs and real pip, offline from a wheelhouse."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

INSTALL = Path(__file__).resolve().parents[2] / "deploy" / "install.sh"

FakeWheel = Callable[..., Path]


def run(
    *args: str | Path, ok: bool = True, script: Path = INSTALL
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    proc = subprocess.run(
        ["bash", str(script), "--python", sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode != 0, proc.stdout + proc.stderr
    return proc


def bundle(tmp_path: Path, fake_wheel: FakeWheel, version: str) -> Path:
    """A bundle directory as build-bundle.sh lays it out (wheels/ + bundle.env)."""
    path = tmp_path / f"bundle-{version}"
    fake_wheel(path / "wheels", version)
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    arch = os.uname().machine
    (path / "bundle.env").write_text(f"VERSION={version}\nPYTHON_VERSION={py}\nARCHES={arch}\n")
    return path


def link(root: Path, name: str) -> str:
    return os.readlink(root / "opt/edge-agent" / name)


def agent_version(root: Path) -> str:
    exe = root / "opt/edge-agent/venv/bin/edge-agent"
    return subprocess.run([exe, "--version"], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def test_install_upgrade_rollback_uninstall(tmp_path: Path, fake_wheel: FakeWheel) -> None:
    root = tmp_path / "root"
    opt = root / "opt/edge-agent"
    etc = root / "etc/edge-agent"

    # 1. Fresh install from an offline bundle.
    out = run("--root", root, "--offline", bundle(tmp_path, fake_wheel, "1.0.0")).stdout
    assert "skipped (staged install" in out  # no useradd/systemctl on this machine
    assert link(root, "current") == "releases/1.0.0"
    assert link(root, "venv") == "current"
    assert not (opt / "previous").exists()
    assert agent_version(root) == "edge-agent 1.0.0"
    unit = root / "etc/systemd/system/edge-agent.service"
    assert unit.read_text() == (INSTALL.parent / "edge-agent.service").read_text()
    assert (etc / "site.yaml.example").is_file() and not (etc / "site.yaml").exists()
    assert stat.S_IMODE((etc / "environment").stat().st_mode) == 0o600
    assert (root / "var/lib/edge-agent").is_dir()
    assert "usbserial" in (root / "etc/modules-load.d/edge-agent.conf").read_text()
    assert (opt / "README-deploy.md").is_file()

    # The technician writes the config and a secret.
    (etc / "site.yaml").write_text("gateway: {id: gw-1, site: s}\n# reject-by-3.0.0\n")
    (etc / "environment").write_text("MQTT_PASSWORD=secret\n")
    marker = opt / "releases/1.0.0/.complete"
    built_at = marker.stat().st_mtime_ns

    # 2. Run again: idempotent, nothing rebuilt, config kept.
    out = run("--root", root, "--offline", bundle(tmp_path, fake_wheel, "1.0.0")).stdout
    assert "already installed" in out
    assert marker.stat().st_mtime_ns == built_at
    assert (etc / "site.yaml").read_text().startswith("gateway: {id: gw-1")
    assert (etc / "environment").read_text() == "MQTT_PASSWORD=secret\n"
    # The site file lives in the state dir (writable by remote config pushes
    # under ProtectSystem=strict); /etc keeps a relative link to it.
    state_site = root / "var/lib/edge-agent/site.yaml"
    assert (etc / "site.yaml").is_symlink()
    assert state_site.read_text().startswith("gateway: {id: gw-1")
    # A technician who replaces the link with a file: that file is moved in.
    (etc / "site.yaml").unlink()
    (etc / "site.yaml").write_text("gateway: {id: gw-1, site: s}\n# reject-by-3.0.0\n# edited\n")
    run("--root", root, "--offline", bundle(tmp_path, fake_wheel, "1.0.0"))
    assert (etc / "site.yaml").is_symlink() and "# edited" in state_site.read_text()
    assert not (root / "var/lib/edge-agent/site.yaml.bak").read_text().endswith("# edited\n")

    # 3. A newer version needs --upgrade: a plain install never switches.
    b2 = bundle(tmp_path, fake_wheel, "2.0.0")
    proc = run("--root", root, "--offline", b2, ok=False)
    assert "use --upgrade" in proc.stderr
    assert link(root, "current") == "releases/1.0.0"

    # 4. Upgrade: new venv, previous kept for rollback, config untouched.
    run("--root", root, "--offline", b2, "--upgrade")
    assert link(root, "current") == "releases/2.0.0"
    assert link(root, "previous") == "releases/1.0.0"
    assert agent_version(root) == "edge-agent 2.0.0"
    assert "reject-by-3.0.0" in (etc / "site.yaml").read_text()

    # 5. A version that rejects the running config is not switched to.
    proc = run("--root", root, "--offline", bundle(tmp_path, fake_wheel, "3.0.0"), "--upgrade",
               ok=False)
    assert "rejected by 3.0.0" in proc.stderr and "rejects" in proc.stderr
    assert link(root, "current") == "releases/2.0.0"
    assert agent_version(root) == "edge-agent 2.0.0"

    # 6. Rollback swaps current and previous (with the kept copy of the
    # installer, as on a gateway whose bundle is gone); twice returns.
    assert (opt / "install.sh").read_bytes() == INSTALL.read_bytes()
    run("--root", root, "--rollback", script=opt / "install.sh")
    assert (link(root, "current"), link(root, "previous")) == ("releases/1.0.0", "releases/2.0.0")
    assert agent_version(root) == "edge-agent 1.0.0"
    run("--root", root, "--rollback")
    assert agent_version(root) == "edge-agent 2.0.0"

    # 7. A release left half-built by a power cut is rebuilt, old ones pruned.
    (opt / "releases/4.0.0/bin").mkdir(parents=True)
    run("--root", root, "--offline", bundle(tmp_path, fake_wheel, "4.0.0"), "--upgrade",
        "--keep", "2")
    assert agent_version(root) == "edge-agent 4.0.0"
    assert (opt / "releases/4.0.0/.complete").is_file()
    assert sorted(p.name for p in (opt / "releases").iterdir()) == ["2.0.0", "4.0.0"]

    # 8. Uninstall keeps config and data unless asked.
    (root / "var/lib/edge-agent/buffer.db").write_text("data")
    run("--root", root, "--uninstall")
    assert not opt.exists() and not unit.exists()
    assert (etc / "site.yaml").exists() and (root / "var/lib/edge-agent/buffer.db").exists()
    run("--root", root, "--uninstall", "--purge")
    assert not etc.exists() and not (root / "var/lib/edge-agent").exists()


def test_rollback_without_previous_and_bad_options(tmp_path: Path, fake_wheel: FakeWheel) -> None:
    root = tmp_path / "root"
    assert "no previous version" in run("--root", root, "--rollback", ok=False).stderr
    assert "nothing installed to upgrade" in run(
        "--root", root, "--upgrade", "--offline", bundle(tmp_path, fake_wheel, "1.0.0"), ok=False
    ).stderr
    assert "unknown option --frobnicate" in run("--frobnicate", ok=False).stderr
    assert "--purge only goes with --uninstall" in run("--root", root, "--purge", ok=False).stderr


def test_bundle_for_another_target_is_refused(tmp_path: Path, fake_wheel: FakeWheel) -> None:
    b = bundle(tmp_path, fake_wheel, "1.0.0")
    (b / "bundle.env").write_text("VERSION=1.0.0\nPYTHON_VERSION=3.9\nARCHES=aarch64\n")
    err = run("--root", tmp_path / "root", "--offline", b, ok=False).stderr
    assert "bundle is for Python 3.9" in err
    assert not (tmp_path / "root/opt/edge-agent/current").exists()

