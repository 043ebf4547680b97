"""What a Sparkplug edge node needs from the running agent, handed over as callables.

The pipeline never imports the runtime: the Agent builds a NodeContext and
gives it to the uplink. No protobuf here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.sdk.driver import DeviceConfig, Driver
from agent.sdk.readings import Sample

__all__ = ["NodeContext", "TagCache", "TagReading"]

#: (value, ts, error or None, uncertain reason or None) of a tag's last reading.
TagReading = tuple[Any, int, str | None, str | None]


class TagCache:
    """The last reading of every tag, for births (a push device's sample holds only changes).

    Fed by an Agent observer; off (one attribute check per batch) unless
    the uplink speaks Sparkplug.
    """

    def __init__(self) -> None:
        self.enabled = False
        self._tags: dict[str, dict[str, TagReading]] = {}

    def observe(self, device: str, samples: list[Sample]) -> None:
        if not self.enabled:
            return
        tags = self._tags.setdefault(device, {})
        for s in samples:
            bad, unc = s.bad, s.uncertain
            for name, value in s.values.items():
                tags[name] = (value, s.ts, bad.get(name) if bad else None,
                              unc.get(name) if unc else None)

    def get(self, device: str) -> dict[str, TagReading]:
        return self._tags.get(device, {})


def _none_driver(name: str) -> Driver | None:
    return None


@dataclass
class NodeContext:
    """The agent as the node sees it."""

    state_dir: Path
    devices: Callable[[], Sequence[DeviceConfig]]
    latest: Callable[[str], dict[str, TagReading]] = field(default=lambda d: {})
    #: False once a device is known to be down (a failed connect or read).
    device_up: Callable[[str], bool] = field(default=lambda d: True)
    driver: Callable[[str], Driver | None] = field(default=_none_driver)
    #: NCMD ``Node Control/Reboot``: the agent's restart (a clean stop; systemd starts it again).
    restart: Callable[[], None] = field(default=lambda: None)
