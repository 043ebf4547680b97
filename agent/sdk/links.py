"""Shared links: one owner object per physical link, used by every device on it.

Several devices often sit on one link: Modbus units on one RS-485 port or
behind one TCP gateway, instruments on a multi-drop serial line.  The link
must be opened once and its traffic serialised, so the first device to
connect creates the link object and the others join it; the last one to
leave closes it.  :class:`SharedLinks` is that bookkeeping, typed and
refcounted, so each protocol does not rebuild it in an untyped dict::

    bus = self.context.links.acquire(key, owner=self.config.name, kind=Bus,
                                     factory=lambda: Bus(key, conn))
    ...
    if (last := self.context.links.release(key, self.config.name)) is not None:
        last.close()       # this device was the last user: the link is ours to close

The core gives each driver plugin its own registry (keys of two drivers
never meet) and keeps it for the agent's life, across device restarts and
config changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["LinkConflict", "SharedLinks"]

T = TypeVar("T")


class LinkConflict(TypeError):
    """A key already holds a link of another type (two kinds of link under one key)."""


@dataclass
class _Entry:
    link: object
    owners: set[str] = field(default_factory=set)


class SharedLinks:
    """Links by key (e.g. ``"tcp:10.0.0.5:502"``, ``"/dev/ttyUSB0"``), refcounted by owner."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def acquire(self, key: str, *, owner: str, kind: type[T], factory: Callable[[], T]) -> T:
        """The link under ``key``, made by ``factory`` if nobody holds it; ``owner`` joins it.

        Acquiring again with the same owner is harmless (it is counted once).
        Raises :class:`LinkConflict` when the link under ``key`` is not a ``kind``.
        """
        entry = self._entries.get(key)
        if entry is None:
            link = factory()
            entry = self._entries[key] = _Entry(link)
        if not isinstance(entry.link, kind):
            raise LinkConflict(f"shared link {key!r} is a {type(entry.link).__name__}, "
                               f"not a {kind.__name__}")
        entry.owners.add(owner)
        return entry.link

    def get(self, key: str, kind: type[T]) -> T | None:
        """The link under ``key`` if there is one of that type (nobody joins it)."""
        entry = self._entries.get(key)
        return entry.link if entry is not None and isinstance(entry.link, kind) else None

    def owners(self, key: str) -> list[str]:
        entry = self._entries.get(key)
        return sorted(entry.owners) if entry is not None else []

    def release(self, key: str, owner: str) -> object | None:
        """``owner`` leaves; returns the link when it was the last one (the caller closes it).

        Releasing a key or an owner that is not there returns None: close paths
        run after failed connects too.
        """
        entry = self._entries.get(key)
        if entry is None or owner not in entry.owners:
            return None
        entry.owners.discard(owner)
        if entry.owners:
            return None
        del self._entries[key]
        return entry.link

    def discard(self, key: str, link: object) -> None:
        """Forget ``key`` if it still holds ``link`` (a link that failed to open)."""
        entry = self._entries.get(key)
        if entry is not None and entry.link is link:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
