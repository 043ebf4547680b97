"""How replies are shown to an operator at a terminal."""

from __future__ import annotations

import difflib
import json
import time
from datetime import datetime
from typing import Any

from agent.cli.commission import format_table

__all__ = ["age", "config_diff", "gateway_table", "sample_table", "status_text"]


def age(started_at: str | None, now: float | None = None) -> str:
    """``3d 4h``, ``5m 12s``: how long ago an ISO timestamp was."""
    if not started_at:
        return "?"
    try:
        then = datetime.fromisoformat(started_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "?"
    secs = int((now if now is not None else time.time()) - then)
    if secs < 0:
        return "0s"
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def gateway_table(states: dict[str, dict[str, Any]], now: float | None = None) -> str:
    rows = [["GATEWAY", "STATUS", "SINCE START", "VERSION", "CONFIG", "NOTE"]]
    for gw in sorted(states):
        s = states[gw]
        note = "rolled back" if s.get("rollback") else ("config error" if s.get("config_error")
                                                        else "")
        rows.append([gw, str(s.get("status", "?")), age(s.get("started_at"), now),
                     str(s.get("version", "?")), str(s.get("config_hash", "?")), note])
    return format_table(rows)


def sample_table(samples: list[dict[str, Any]]) -> str:
    rows = [["TAG", "VALUE", "QUALITY"]]
    for sample in samples:
        bad = sample.get("bad", {})
        uncertain = sample.get("uncertain", {})
        for tag, value in sample.get("values", {}).items():
            quality = ("bad: " + str(bad[tag])) if tag in bad else (
                "uncertain: " + str(uncertain[tag]) if tag in uncertain else "good")
            rows.append([tag, json.dumps(value), quality])
    return format_table(rows)


def status_text(result: dict[str, Any]) -> str:
    up = result.get("uplink", {})
    buf = result.get("buffer", {})
    lines = [
        f"status {result.get('status')}, version {result.get('version')}, "
        f"up {age(result.get('started_at'))}, config {result.get('config_hash')}"
        + (" (pending: rollback watch running)" if result.get("config_pending") else ""),
        f"uplink sent {up.get('sent')} acked {up.get('acked')} reconnects {up.get('reconnects')}; "
        f"buffer {buf.get('depth')} batches, {buf.get('bytes')} bytes, "
        f"oldest {buf.get('oldest_age_s')} s, dropped {buf.get('dropped_batches')}",
    ]
    for key in ("config_error", "rollback"):
        value = result.get(key)
        if value:
            lines.append(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
    rows = [["DEVICE", "CONNECTED", "POLLS", "ERRORS", "LATENCY MS", "LAST ERROR"]]
    for name, d in sorted(result.get("devices", {}).items()):
        rows.append([name, "yes" if d.get("connected") else "no", str(d.get("polls")),
                     str(d.get("errors")), str(d.get("latency_ms")), str(d.get("last_error") or "")])
    if len(rows) > 1:
        lines.append(format_table(rows))
    return "\n".join(lines)


def config_diff(current: str, new: str, *, name: str) -> str:
    """Unified diff of the gateway's running config against the file to push."""
    return "".join(difflib.unified_diff(
        current.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile="gateway (running)", tofile=name))
