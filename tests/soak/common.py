"""Shared by the soak runs: the long/short switch, the agent as a process, what arrived."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Collector

ROOT = Path(__file__).resolve().parents[2]
#: ``EDGE_SOAK=long`` runs the by-hand sizes; CI runs the short ones (< 60 s each).
LONG = os.environ.get("EDGE_SOAK", "") == "long"
GATEWAY = "gw-soak"


def site_text(url: str, devices: list[dict[str, Any]], *, commit: str = "200ms",
              **buffer: Any) -> str:
    return yaml.safe_dump({
        "gateway": {"id": GATEWAY, "site": "lab"},
        "uplink": {"mqtt": {"url": url, "reconnect_max": "1s"}},
        "buffer": {"commit_interval": commit, **buffer},
        "devices": devices,
    })


def start_agent(site: Path, state: Path) -> subprocess.Popen[bytes]:
    log = open(state.parent / "agent.log", "ab")  # the child writes to it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli.main", "run", "-c", str(site), "--state-dir",
             str(state)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    finally:
        log.close()


def stored_seqs(state: Path) -> tuple[set[int], int]:
    """Seqs still in the buffer, and the last seq ever given."""
    path = state / "buffer.sqlite"
    if not path.exists():
        return set(), 0
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        try:
            left = {r[0] for r in db.execute("SELECT seq FROM batches")}
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
        except sqlite3.OperationalError:  # not created yet
            return set(), 0
    return left, int(row[0]) if row else 0


def delivered(col: Collector) -> dict[int, dict[str, Any]]:
    """Data messages by seq (a duplicate after a crash has the same payload)."""
    out: dict[int, dict[str, Any]] = {}
    for topic, payload, _ in col.messages:
        if "/data/" in topic and payload:
            msg = json.loads(payload)
            out[int(msg["seq"])] = msg
    return out


def presses(template: dict[str, Any], count: int, poll: str) -> list[dict[str, Any]]:
    """``count`` devices polling the same simulator, for more readings per second."""
    out = []
    for i in range(count):
        d = json.loads(json.dumps(template))
        d["name"] = f"press-{i}"
        d["poll"] = poll
        out.append(d)
    return out
