"""What a validated site is, and what a refused one reports: no parsing here.

The running agent holds :class:`Site` objects and catches
:class:`ConfigErrors`, but parses nothing itself (a forked child does, see
:mod:`agent.config.offload`).  Keeping these apart from
:mod:`agent.config.load` means the agent never imports the YAML parser, the
secret resolver or the validation helpers for good.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config.model import SiteConfig
    from agent.sdk.driver import DeviceConfig

__all__ = ["ConfigErrors", "Loc", "Problem", "Site"]

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    line: int
    path: str
    message: str

    def format(self, source: str | None) -> str:
        """``FILE:LINE: key.path: message`` (``LINE: ...`` without a file)."""
        head = f"{source}:{self.line}" if source else str(self.line)
        return f"{head}: {_one_line(self.path or '(top)')}: {_one_line(self.message)}"


def _one_line(text: str) -> str:
    """``text`` with control characters escaped: one problem, one line.

    A key or a secret path may hold a newline or an ESC; printed raw it would
    forge a second problem line or drive the operator's terminal.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class ConfigErrors(Exception):
    def __init__(self, problems: list[Problem], source: str | None) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.path))
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(p.format(self.source) for p in self.problems)


@dataclass(frozen=True)
class Site:
    """A validated site file."""

    text: str
    source: str | None
    config: SiteConfig
    devices: tuple[DeviceConfig, ...]
    warnings: tuple[str, ...] = ()
    #: Where the drivers the devices use live: ``(name, "module:attribute")``,
    #: so the running agent imports those plugins only (see DriverCatalog).
    drivers: tuple[tuple[str, str], ...] = ()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def device(self, name: str) -> DeviceConfig | None:
        return next((d for d in self.devices if d.name == name), None)
