"""Remote management over MQTT (state, metrics, commands).  Filled in by issue 7."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.app import Agent

__all__ = ["attach_management"]


def attach_management(agent: Agent, *, config_path: Path | None) -> None:
    """Register the management services of ``agent`` (none yet)."""
