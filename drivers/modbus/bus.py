"""One owner per link: a serial port, or a TCP endpoint (device, gateway, converter).

Every device naming the same port (or host:port) shares one :class:`Bus`:
one pymodbus client, one request on the wire at a time.  The lock is
``asyncio.Lock``, which is FIFO: a device waiting for its next request
queues behind the requests other devices already asked for, so scans
interleave request by request instead of one device's scan blocking the
others.  Before each request the bus keeps the link quiet for the RTU
inter-frame silence (3.5 characters) and the device's ``pause``.

A unit that stops answering is backed off on its own (:class:`UnitState`):
its reads fail at once, without touching the wire, until its next probe;
a probe is a single attempt, so a dead unit costs the bus one timeout per
backoff period (doubling up to ``unit_backoff_max``) instead of
``timeout x (retries + 1)`` on every scan.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from agent.sdk.driver import DeviceUnavailable, DriverError
from agent.sdk.links import SharedLinks
from drivers.modbus.options import (
    AsciiConnection,
    RtuConnection,
    RtuOverTcpConnection,
    SerialConnection,
    TcpConnection,
)

__all__ = ["Bus", "ExceptionReply", "NoAnswer", "UnitDown", "bus_for", "bus_key"]

log = logging.getLogger("drivers.modbus")

AnyConnection = TcpConnection | RtuOverTcpConnection | RtuConnection | AsciiConnection

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class ExceptionReply(DriverError):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int, *, device: str = "") -> None:
        name = EXCEPTION_NAMES.get(code, "unknown")
        super().__init__(f"exception {code} ({name})", device=device)
        self.exception_code = code


class NoAnswer(DeviceUnavailable):
    """No (valid) answer within the timeout, after every retry."""


class UnitDown(DeviceUnavailable):
    """The unit is backed off; the request was not sent."""


def bus_key(conn: AnyConnection) -> str:
    if isinstance(conn, SerialConnection):
        # /dev/serial/by-id/... and /dev/ttyUSB0 are one port: resolve links.
        return f"modbus:serial:{os.path.realpath(conn.port)}"
    return f"modbus:{conn.transport}:{conn.host}:{conn.port}"


def _silence(conn: AnyConnection) -> float:
    """RTU inter-frame silence: 3.5 characters, 1.75 ms above 19200 baud (spec 2.5.1.1)."""
    if not isinstance(conn, RtuConnection):
        return 0.0
    if conn.baudrate > 19200:
        return 0.00175
    bits = 1 + conn.bytesize + (0 if conn.parity == "N" else 1) + conn.stopbits
    return 3.5 * bits / conn.baudrate


@dataclass
class UnitState:
    """Backoff of one unit id on a bus."""

    failures: int = 0
    next_probe: float = 0.0
    probing: bool = False
    reason: str = ""

    @property
    def down(self) -> bool:
        return self.failures > 0


class Bus:
    """A shared link; create through :func:`bus_for`."""

    def __init__(self, key: str, conn: AnyConnection) -> None:
        self.key = key
        self.conn = conn
        self.name = conn.port if isinstance(conn, SerialConnection) else f"{conn.host}:{conn.port}"
        self.units: dict[int, UnitState] = {}
        self.requests = 0  # on the wire, for tests and the benchmark
        self._lock = asyncio.Lock()
        self._client: Any = None
        self._silence = _silence(conn)
        self._idle_since = 0.0
        self._connect_failures = 0
        self._next_connect = 0.0

    def _make_client(self) -> Any:
        c = self.conn
        # retries=0 and reconnect_delay=0: retries, timeouts and reconnects
        # are ours (per device, per unit), not the library's.
        common: dict[str, Any] = {"timeout": c.timeout, "retries": 0, "reconnect_delay": 0}
        if isinstance(c, SerialConnection):
            framer = FramerType.ASCII if c.transport == "ascii" else FramerType.RTU
            client: Any = AsyncModbusSerialClient(
                c.port, framer=framer, baudrate=c.baudrate, bytesize=c.bytesize,
                parity=c.parity, stopbits=c.stopbits, **common,
            )
        else:
            framer = FramerType.RTU if c.transport == "rtu_over_tcp" else FramerType.SOCKET
            client = AsyncModbusTcpClient(c.host, port=c.port, framer=framer, **common)
        # pymodbus closes a TCP link after a few unanswered requests; a dead
        # unit behind a gateway must not cut off its neighbours: we decide.
        client.set_max_no_responses(1 << 30)
        return client

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def _ensure_open(self) -> Any:
        if self.connected:
            return self._client
        now = time.monotonic()
        if now < self._next_connect:
            raise DeviceUnavailable(
                f"cannot connect to {self.name}; next try in {self._next_connect - now:.1f}s"
            )
        # A stat of a device node: instant, and it gives a clearer error than pymodbus.
        port_gone = isinstance(self.conn, SerialConnection) and not os.path.exists(  # noqa: ASYNC240
            self.conn.port
        )
        if port_gone:
            self._connect_failed()
            raise DeviceUnavailable(f"serial port {self.name} does not exist")
        if self._client is not None:
            self._client.close()
        self._client = self._make_client()
        try:
            opened = await self._client.connect()
            reason = ""
        except Exception as err:  # pyserial/termios raise anything: report it, by name
            opened, reason = False, f": {type(err).__name__}: {err}"
        if not opened:
            self._client.close()
            self._client = None
            self._connect_failed()
            raise DeviceUnavailable(f"cannot connect to {self.name}{reason}")
        if self._connect_failures:
            log.info("modbus link %s open again", self.name)
        self._connect_failures = 0
        self._idle_since = time.monotonic()
        return self._client

    async def open(self) -> None:
        async with self._lock:
            await self._ensure_open()

    def _connect_failed(self) -> None:
        # Several devices share the link: one failed connect answers them all
        # for a while, instead of each paying the connect timeout.
        self._connect_failures += 1
        delay = min(30.0, 0.5 * 2 ** (self._connect_failures - 1))
        self._next_connect = time.monotonic() + delay * random.uniform(0.8, 1.0)

    def unit(self, unit: int) -> UnitState:
        state = self.units.get(unit)
        if state is None:
            state = self.units[unit] = UnitState()
        return state

    def admit(self, unit: int, retries: int) -> int:
        """Before a scan: raise UnitDown while backed off; return the retries to use."""
        state = self.unit(unit)
        if not state.down:
            return retries
        now = time.monotonic()
        if state.probing or now < state.next_probe:
            wait = max(0.0, state.next_probe - now)
            raise UnitDown(f"unit {unit} not answering ({state.reason}); next try in {wait:.1f}s")
        state.probing = True
        return 0  # a probe is one attempt: a dead unit costs one timeout

    def unit_ok(self, unit: int) -> None:
        state = self.units.get(unit)
        if state is not None and (state.down or state.probing):
            if state.down:
                log.info("modbus %s unit %d answers again", self.name, unit)
            self.units[unit] = UnitState()

    def probe_over(self, unit: int) -> None:
        """A scan ended without a verdict on the unit (link lost, cancelled)."""
        state = self.units.get(unit)
        if state is not None:
            state.probing = False

    def unit_failed(self, unit: int, reason: str, backoff_max: float) -> None:
        state = self.unit(unit)
        state.failures += 1
        state.probing = False
        state.reason = reason
        delay = min(backoff_max, 2.0 ** (state.failures - 1))
        state.next_probe = time.monotonic() + delay * random.uniform(0.8, 1.0)
        if state.failures == 1:
            log.error("modbus %s unit %d not answering (%s); backing off", self.name, unit, reason)
        else:
            log.debug("modbus %s unit %d still not answering", self.name, unit)

    async def execute(
        self,
        call: Callable[[Any], Awaitable[Any]],
        *,
        answer_within: float,
        retries: int,
        pause: float = 0.0,
        check: Callable[[Any], bool] | None = None,
    ) -> Any:
        """Run one request (``call(client)``), alone on the link; return the PDU.

        Raises ExceptionReply, NoAnswer (after retries) or DeviceUnavailable.
        """
        async with self._lock:
            client = await self._ensure_open()
            # The client was made with one timeout; devices sharing the link
            # may each have their own, so set it per request (we hold the lock).
            client.ctx.comm_params.timeout_connect = answer_within
            error = "timeout"
            for _ in range(retries + 1):
                wait = self._idle_since + max(self._silence, pause) - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.requests += 1
                try:
                    reply = await call(client)
                except ModbusIOException as err:
                    error = "timeout" if "No response" in str(err) else f"bad answer: {err}"
                    continue
                except ConnectionException as err:
                    self._drop()
                    raise DeviceUnavailable(f"link {self.name} lost: {err}") from None
                except ModbusException as err:  # undecodable answer and the like
                    error = f"bad answer: {err}"
                    continue
                finally:
                    self._idle_since = time.monotonic()
                if reply.isError():
                    raise ExceptionReply(int(getattr(reply, "exception_code", 0)))
                if check is not None and not check(reply):
                    # A late answer to an earlier, timed-out request (RTU has
                    # no transaction id): count it as no answer and retry.
                    error = "mismatched answer"
                    continue
                return reply
            if not self.connected:
                self._drop()
                raise DeviceUnavailable(f"link {self.name} lost")
            raise NoAnswer(error)

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def idle_close(self) -> None:
        """close_after_scan: close the link unless someone is waiting for it."""
        if not self._lock.locked():
            async with self._lock:
                self._drop()

    def close(self) -> None:
        self._drop()


def bus_for(links: SharedLinks, owner: str, conn: AnyConnection) -> Bus:
    """The bus for this connection, created on first use; ``owner`` joins it.

    Leave with ``links.release(bus.key, owner)``: the last one out closes the bus.
    """
    key = bus_key(conn)
    return links.acquire(key, owner=owner, kind=Bus, factory=lambda: Bus(key, conn))
