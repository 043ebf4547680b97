"""bdSeq: the birth/death sequence number, persisted across restarts.

It goes up by one (0-255, wrapping) before every MQTT CONNECT: the will of
that connection (NDEATH) and the NBIRTH that follows carry the same number,
so a host can tell which death ends which birth, also across a kill -9.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.config.store import atomic_write

__all__ = ["BdSeqStore"]

log = logging.getLogger("agent.sparkplug")


class BdSeqStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: int | None = None

    def _stored(self) -> int:
        try:
            return int(self.path.read_text().strip()) % 256
        except FileNotFoundError:
            return -1  # the first connect ever uses 0
        except (OSError, ValueError) as err:
            log.warning("sparkplug: cannot read %s (%s); bdSeq starts again at 0", self.path, err)
            return -1

    def next(self) -> int:
        """The bdSeq of the connect about to be made (stored before it is used)."""
        value = (self._stored() + 1) % 256
        try:
            atomic_write(self.path, f"{value}\n")
        except OSError as err:
            # Never block the uplink on it: a host sees a repeated bdSeq at worst.
            log.error("sparkplug: cannot store bdSeq in %s: %s", self.path, err)
        self.current = value
        return value
