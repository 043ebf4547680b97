"""The config store: the files in the state directory that say which site config runs.

The site file is written so that a power cut leaves the old or the new one,
never half; beside it the last-good copy and the probation marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["LAST_GOOD", "PROBATION", "atomic_write", "clear_probation", "default_state_dir",
           "on_probation", "read_probation", "save_last_good", "write_probation"]


def atomic_write(path: Path, text: str) -> None:
    """Temp file in the same directory, fsync, rename over ``path``, fsync the directory.

    The file keeps the permission bits of the one it replaces (a site file is
    often 0640 because it names secret files).  A symlink is followed and its
    target replaced, so ``/etc/edge-agent/site.yaml`` may point into a
    writable directory while /etc stays read-only.
    """
    path = path.resolve()
    mode = None
    with contextlib.suppress(FileNotFoundError):
        mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself is only durable once the directory entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


#: In the state directory while a pushed config has not proven its uplink
#: yet; it survives a restart, so a crash during probation cannot promote the
#: pushed config to last-good (run.py checks it at start).
PROBATION = "config-probation.json"


def write_probation(state_dir: Path, config_hash: str, rollback_after: float) -> None:
    atomic_write(state_dir / PROBATION,
                 json.dumps({"hash": config_hash, "rollback_after": rollback_after}))


def read_probation(state_dir: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((state_dir / PROBATION).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("hash"), str):
        return None
    return marker


def clear_probation(state_dir: Path) -> None:
    (state_dir / PROBATION).unlink(missing_ok=True)


def on_probation(state_dir: Path, config_hash: str) -> bool:
    """True when the config with ``config_hash`` was pushed and is not proven yet."""
    marker = read_probation(state_dir)
    return marker is not None and marker["hash"] == config_hash


LAST_GOOD = "last-good.yaml"
DEFAULT_STATE = "/var/lib/edge-agent"


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` (set by systemd's StateDirectory=), else /var/lib/edge-agent."""
    return Path(os.environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_STATE)


def save_last_good(state_dir: Path, text: str) -> None:
    """Keep ``text`` as the config to fall back to (atomically, fsynced)."""
    atomic_write(state_dir / LAST_GOOD, text)
