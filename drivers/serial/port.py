"""The one asyncio adapter over a serial port (pyserial-asyncio-fast).

pyserial-asyncio-fast registers the port's file descriptor with the event
loop (``add_reader``), so reading never blocks the loop and no thread is
spent per port; only open and close run in the default executor.  The port
is opened exclusively (``flock``): two agents, or an agent and a terminal
program, must not share an instrument line unnoticed.

Received bytes go straight through a callback (the driver's framer) inside
``data_received``: no intermediate queue, no copy beyond the framer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from drivers.serial.options import SerialConnection

__all__ = ["PortClosed", "SerialPort"]


class PortClosed(Exception):
    """The port went away (adapter pulled, pty closed) or was never opened."""


OnData = Callable[[bytes], None]
OnLost = Callable[[str], None]


class _Protocol(asyncio.Protocol):
    def __init__(self, port: SerialPort) -> None:
        self._port = port

    def data_received(self, data: bytes) -> None:
        self._port.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._port.lost(exc)


class SerialPort:
    """An open serial port; ``closed`` is set when it is gone, with ``error``."""

    def __init__(self, config: SerialConnection, on_data: OnData, on_lost: OnLost) -> None:
        self.config = config
        self.on_data = on_data
        self._on_lost = on_lost
        self.closed = asyncio.Event()
        self.error: str | None = None
        self._transport: Any = None

    async def open(self) -> None:
        # Imported here: a site without serial devices never loads pyserial.
        import serial
        import serial_asyncio_fast

        c = self.config
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: _Protocol(self),
                c.port,
                baudrate=c.baudrate,
                bytesize=c.bytesize,
                parity=c.parity,
                stopbits=c.stopbits,
                xonxoff=c.xonxoff,
                rtscts=c.rtscts,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as err:
            raise PortClosed(f"cannot open {c.port}: {_why(err)}") from None
        self._transport = transport

    def lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = (f"port {self.config.port} lost: {_why(exc)}" if exc is not None
                          else f"port {self.config.port} closed")
        self._transport = None
        self.closed.set()
        self._on_lost(self.error)

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise PortClosed(self.error or f"port {self.config.port} is not open")
        transport.write(data)

    def discard_input(self) -> None:
        """Throw away bytes the OS has received but we have not read yet."""
        transport = self._transport
        if transport is not None and transport.serial is not None:
            # A vanished port fails here too; the read side reports it.
            with contextlib.suppress(Exception):
                transport.serial.reset_input_buffer()

    async def close(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if self.error is None:
            self.error = f"port {self.config.port} closed"
        # abort: pending output is pointless once we stop; the library
        # closes the device in the executor, then reports the loss.
        transport.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), 5.0)
        self._transport = None


def _why(err: BaseException | None) -> str:
    """The cause in words a technician can act on, without pyserial's repetition."""
    if err is None:
        return "closed"
    text = str(err)
    if "exclusively lock" in text:
        return "in use by another program or device (exclusive lock held)"
    errno = getattr(err, "errno", None)
    if isinstance(errno, int):
        # "[Errno 2] could not open port X: [Errno 2] No such file..." -> the cause.
        return os.strerror(errno)
    return text or type(err).__name__
