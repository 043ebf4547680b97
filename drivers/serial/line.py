"""One serial line: the open port, its framer, and the devices that use it.

Usually one device owns a port.  On an RS-485 multi-drop line several
instruments share one port and are told apart by their request (``"#01\\r"``,
``"#02\\r"``): devices in poll mode with the same port then share one
:class:`SerialLine` (a shared link in ``DriverContext.links``), and take turns
through its lock, so a reply always reaches the device that asked.

Frames go to the device holding the line (the one waiting for a reply);
with nobody holding it, to the owner (a stream device's frames, or a late
reply counted as such by the last device that asked).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Protocol

from agent.sdk.links import SharedLinks
from agent.sdk.readings import now_ms
from drivers.serial.framing import Framer
from drivers.serial.options import FrameConfig, SerialConnection
from drivers.serial.port import PortClosed, SerialPort

__all__ = ["LineBusy", "LineUser", "SerialLine", "attach", "detach"]

log = logging.getLogger("drivers.serial")


class LineBusy(Exception):
    """The port is open for another device with settings that cannot share it."""


class LineUser(Protocol):
    name: str

    def on_frame(self, frame: bytes, ts: int) -> None: ...

    def on_dropped(self, reason: str, n: int) -> None: ...

    def on_lost(self, error: str) -> None: ...


class SerialLine:
    def __init__(self, connection: SerialConnection, frame: FrameConfig, shareable: bool) -> None:
        self.connection = connection
        self.frame = frame
        self.shareable = shareable
        self.framer = Framer(frame)
        self.port = SerialPort(connection, self._on_data, self._on_lost)
        self.lock = asyncio.Lock()
        self.users: list[LineUser] = []
        # Who gets frames now: the device waiting for a reply, else the
        # last one that asked (or the first user).
        self.active: LineUser | None = None
        self._last: LineUser | None = None
        self._bug_logged = False
        self.key = connection.port  # the resolved path, set by attach()
        # Resolved when the port is open; devices joining meanwhile wait on it.
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def closed(self) -> bool:
        return self.port.closed.is_set()

    def _on_data(self, data: bytes) -> None:
        user = self.active or self._last or (self.users[0] if self.users else None)
        try:
            self._dispatch(data, user)
        except Exception:
            # The transport's callback must survive anything: a bug of ours
            # must not kill the port's reader.  Traceback once, then counted.
            if not self._bug_logged:
                self._bug_logged = True
                log.exception("serial line %s: error handling received data",
                              self.connection.port)
            if user is not None:
                user.on_dropped("internal_error", 1)

    def _dispatch(self, data: bytes, user: LineUser | None) -> None:
        ts = now_ms()
        frames = self.framer.feed(data)
        if user is None:
            self.framer.dropped.clear()
            return
        if self.framer.dropped:
            for reason, n in self.framer.dropped.items():
                user.on_dropped(reason, n)
            self.framer.dropped.clear()
        for frame in frames:
            user.on_frame(frame, ts)

    def _on_lost(self, error: str) -> None:
        for user in list(self.users):
            user.on_lost(error)

    def hold(self, user: LineUser) -> None:
        """``user`` is about to ask: its reply, and only its, goes to it."""
        self.active = self._last = user
        # A late answer to an earlier request must not pass for this one.
        self.port.discard_input()
        self.framer.reset()

    def release(self) -> None:
        self.active = None

    def write(self, data: bytes) -> None:
        self.port.write(data)


def _line_key(port: str) -> str:
    # /dev/serial/by-id/... and /dev/ttyUSB0 may name the same adapter.  A
    # symlink lookup in /dev (devtmpfs) never waits on hardware, so doing it
    # on the loop is fine.
    return os.path.realpath(port)


def _settings(connection: SerialConnection) -> dict[str, Any]:
    return connection.model_dump(exclude={"port"})


def _owner(user: LineUser) -> str:
    # The instance, not only the name: a restarted device's old driver must
    # never give up the new one's share.
    return f"{user.name}@{id(user):x}"


async def attach(
    links: SharedLinks, user: LineUser, connection: SerialConnection, frame: FrameConfig,
    *, shareable: bool,
) -> SerialLine:
    """Open the device's port, or join the line already open on it."""
    key = _line_key(connection.port)
    line = links.get(key, SerialLine)
    if line is not None and not line.closed and line.users:
        if not (shareable and line.shareable):
            raise LineBusy(f"port {connection.port} is in use by device "
                           f"{line.users[0].name}; only poll-mode devices can share a port")
        if _settings(line.connection) != _settings(connection) or line.frame != frame:
            raise LineBusy(f"port {connection.port} is shared with device {line.users[0].name}"
                           " but with other connection or frame settings; they must be equal")
        joined = line
        links.acquire(key, owner=_owner(user), kind=SerialLine, factory=lambda: joined)
        line.users.append(user)
        try:
            await asyncio.shield(line.ready)  # the first device may still be opening it
        except BaseException:  # failed or cancelled: we never joined
            if user in line.users:
                line.users.remove(user)
            links.release(key, _owner(user))
            raise
        return line
    if line is not None:
        links.discard(key, line)  # closed, or left by all: its users close it themselves
    line = fresh = SerialLine(connection, frame, shareable)
    line.key = key
    links.acquire(key, owner=_owner(user), kind=SerialLine, factory=lambda: fresh)
    line.users.append(user)
    try:
        await line.port.open()
    except BaseException as err:  # also cancellation: joiners must not wait for ever
        line.users.clear()
        links.discard(key, line)
        failure = err if isinstance(err, PortClosed) else PortClosed(
            f"opening {connection.port} was interrupted")
        line.ready.set_exception(failure)
        line.ready.exception()  # retrieved: joiners, if any, re-raise it themselves
        raise
    # Bytes that waited in the OS buffer before we opened have no
    # trustworthy time; start from a clean line.
    line.port.discard_input()
    line.ready.set_result(None)
    return line


async def detach(links: SharedLinks, line: SerialLine, user: LineUser) -> None:
    """Leave the line; the last user closes the port."""
    links.release(line.key, _owner(user))
    if user in line.users:
        line.users.remove(user)
    if line.active is user:
        line.active = None
    if line._last is user:
        line._last = None
    if line.users:
        return
    links.discard(line.key, line)
    await line.port.close()
