"""The site file is replaced atomically, keeps its mode, follows a symlink; probation marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config.store import (
    atomic_write,
    clear_probation,
    on_probation,
    read_probation,
    write_probation,
)


def test_atomic_write_keeps_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("old\n")
    site.chmod(0o640)
    atomic_write(site, "new\n")
    assert site.read_text() == "new\n"
    assert site.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.yaml"]


def test_atomic_write_follows_a_symlink(tmp_path: Path) -> None:
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    state.mkdir()
    (state / "site.yaml").write_text("old\n")
    (etc / "site.yaml").symlink_to(state / "site.yaml")
    etc.chmod(0o555)  # /etc read-only, as under ProtectSystem=strict
    try:
        atomic_write(etc / "site.yaml", "new\n")
    finally:
        etc.chmod(0o755)
    assert (etc / "site.yaml").is_symlink()
    assert (etc / "site.yaml").read_text() == "new\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_atomic_write_into_a_read_only_directory_fails_cleanly(tmp_path: Path) -> None:
    site = tmp_path / "ro" / "site.yaml"
    site.parent.mkdir()
    site.write_text("old\n")
    site.parent.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            atomic_write(site, "new\n")
    finally:
        site.parent.chmod(0o755)
    assert site.read_text() == "old\n"


def test_probation_marker(tmp_path: Path) -> None:
    assert read_probation(tmp_path) is None and not on_probation(tmp_path, "abc")
    write_probation(tmp_path, "abc", 30.0)
    assert read_probation(tmp_path) == {"hash": "abc", "rollback_after": 30.0}
    assert on_probation(tmp_path, "abc") and not on_probation(tmp_path, "def")
    clear_probation(tmp_path)
    clear_probation(tmp_path)  # idempotent
    assert not on_probation(tmp_path, "abc")
    (tmp_path / "config-probation.json").write_text("{broken")
    assert read_probation(tmp_path) is None
