"""The instrument's end of a pseudo-terminal pair, for the simulator and tests.

``os.openpty`` gives a master and a slave; the agent opens the slave by its
path exactly as it would open ``/dev/ttyUSB0``, and whatever plays the
instrument reads and writes the master.  ``link`` is a stable symlink to the
slave (like ``/dev/serial/by-id/...``): re-pointing it at a new pair after
``close()`` is what unplugging and replugging a USB adapter looks like.

Everything is non-blocking on the event loop: a full pty buffer (nobody
reading the slave) makes ``send`` wait for room, never the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from pathlib import Path

__all__ = ["PtyPeer"]

OnRequest = Callable[[bytes], None]


class PtyPeer:
    def __init__(self, link: Path | None = None) -> None:
        self.master, self._slave = os.openpty()
        # Raw line discipline before the agent opens the slave: no echo and
        # no CR -> LF translation of what the instrument sends.
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.slave_path = os.ttyname(self._slave)
        self.link = link
        if link is not None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(self.slave_path)
        self.received = bytearray()
        self._on_request: OnRequest | None = None
        self._reading = False
        self._closed = False

    @property
    def path(self) -> str:
        """What the agent's ``connection.port`` should name."""
        return str(self.link) if self.link is not None else self.slave_path

    def on_receive(self, callback: OnRequest | None = None) -> None:
        """Start collecting what the agent writes; ``callback`` sees each chunk."""
        self._on_request = callback
        if not self._reading:
            asyncio.get_running_loop().add_reader(self.master, self._readable)
            self._reading = True

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError:
            # EIO: no slave open at the moment (the agent closed the port).
            # Stop watching, or the loop would spin on the error.
            self._stop_reading()
            return
        self.received += data
        if self._on_request is not None:
            self._on_request(data)

    def _stop_reading(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.master)
            self._reading = False

    def write_nowait(self, data: bytes | memoryview) -> int:
        """Write what fits now; returns the bytes written (0 when full)."""
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0

    async def send(self, data: bytes) -> None:
        """Write everything, waiting for room when the pty buffer is full."""
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            written = self.write_nowait(view)
            view = view[written:]
            if view:
                await self._writable(loop)

    async def _writable(self, loop: asyncio.AbstractEventLoop) -> None:
        room: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not room.done():
                room.set_result(None)

        loop.add_writer(self.master, ready)
        try:
            await room
        finally:
            loop.remove_writer(self.master)

    def close(self) -> None:
        """Hang up: the agent's next read of the slave fails (EIO)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError):
            self._stop_reading()
        os.close(self.master)
        os.close(self._slave)
