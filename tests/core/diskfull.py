"""A small real filesystem that fills up: a tmpfs mounted (and unmounted) by the test."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "3m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path``; skip the test when that is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs at {path} (needs root with CAP_SYS_ADMIN): "
                    f"{done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave: int = 0, name: str = "filler") -> Path:
    """Grow a filler file on ``disk`` until only ``leave`` bytes are free."""
    filler = disk / name
    with open(filler, "ab") as out:
        while (free := free_bytes(disk)) > leave:
            try:
                out.write(b"\0" * min(free - leave, 1 << 16))
                out.flush()
            except OSError:
                break
    return filler
