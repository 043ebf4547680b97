"""The config store: the one place that reads and writes the files saying which config runs.

- the **site file** (``-c``, often ``/etc/edge-agent/site.yaml``): what the
  operator or a ``config.apply`` wants to run;
- ``last-good.yaml`` in the state directory: the config that has run healthy
  (uplink up) for its probation; what a failed start or a rollback falls
  back to;
- ``pending.yaml`` + ``config-probation.json``: the config on probation and
  its window; they survive a restart, so a crash during probation can never
  promote the new config;
- ``rolled-back.yaml``: the last config a rollback replaced, kept for the
  operator (a rollback rewrites the site file).

Every write is atomic: a power cut leaves the old or the new file, never half.
*When* a config is promoted or rolled back is decided in one place,
:mod:`agent.runtime.reload`; this module only keeps the files.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from agent.config.offload import off_process
from agent.config.site import ConfigErrors, Site

__all__ = ["LAST_GOOD", "PENDING", "PROBATION", "ROLLED_BACK", "ConfigStore", "atomic_write",
           "clear_probation", "default_state_dir", "on_probation", "read_probation",
           "save_last_good", "write_probation"]


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


#: In the state directory while a config has not proven itself yet; it
#: survives a restart, so a crash during probation cannot promote it.
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
    """True when the config with ``config_hash`` is on probation (not proven yet)."""
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


PENDING = "pending.yaml"
ROLLED_BACK = "rolled-back.yaml"


def _load_file(path: Path) -> Site:
    # Imported where the parse runs (a forked child): the agent itself never
    # holds the YAML parser and the validators.
    from agent.config.load import load_site

    return load_site(path)


def _parse_text(text: str, source: str) -> Site:
    from agent.config.load import parse_site

    return parse_site(text, source)


class ConfigStore:
    """The site file and the state directory's config files, for one agent.

    Methods block (file I/O, fsync, validation): call them through
    ``asyncio.to_thread`` from the event loop.
    """

    def __init__(self, state_dir: Path, site_path: Path | None = None) -> None:
        self.state_dir = state_dir
        #: None: nothing to write back (the demo, tests): configs apply live only.
        self.site_path = site_path

    # -- the site file ---------------------------------------------------
    def load_site(self) -> Site:
        """The site file, validated; raises ConfigErrors with every problem."""
        if self.site_path is None:
            raise ValueError("this agent has no site file")
        return off_process(functools.partial(_load_file, self.site_path))

    def load_at_start(self) -> tuple[Site, ConfigErrors | None]:
        """The site file, else last-good with the site file's problems, else raise them."""
        try:
            return self.load_site(), None
        except ConfigErrors as err:
            good = self.last_good()
            if good is None:
                raise
            return good, err

    def write_site(self, text: str) -> None:
        if self.site_path is not None:
            atomic_write(self.site_path, text)

    # -- last good ---------------------------------------------------------
    def last_good(self) -> Site | None:
        """The last good config, or None (never saved, unreadable or no longer valid)."""
        path = self.state_dir / LAST_GOOD
        try:
            # Read here: a missing file is no reason to start a validator.
            text = path.read_text(encoding="utf-8")
            return off_process(functools.partial(_parse_text, text, str(path)))
        except (OSError, UnicodeDecodeError, ConfigErrors):
            return None

    def promote(self, site: Site) -> None:
        """``site`` has proven itself: it is last-good, probation is over."""
        save_last_good(self.state_dir, site.text)
        self.end_probation()

    # -- probation -----------------------------------------------------------
    def begin_probation(self, site: Site, rollback_after: float) -> None:
        atomic_write(self.state_dir / PENDING, site.text)
        write_probation(self.state_dir, site.hash, rollback_after)

    def probation(self) -> dict[str, Any] | None:
        """``{"hash", "rollback_after"}`` of the config on probation, or None."""
        return read_probation(self.state_dir)

    def end_probation(self) -> None:
        clear_probation(self.state_dir)
        (self.state_dir / PENDING).unlink(missing_ok=True)

    def keep_rolled_back(self, site: Site) -> Path:
        """Keep the text a rollback replaces, so an operator's edit is never just lost."""
        path = self.state_dir / ROLLED_BACK
        atomic_write(path, site.text)
        return path
