"""The Modbus driver: plan once, read blocks through the bus, decode, write guarded."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from agent.sdk.driver import DeviceUnavailable, Driver, DriverContext, DriverError, WriteRefused
from agent.sdk.readings import Sample, now_ms
from drivers.modbus.bus import Bus, ExceptionReply, NoAnswer, UnitDown, bus_for
from drivers.modbus.codec import EncodeError, encode_registers, parse_bool
from drivers.modbus.options import ModbusDevice, ModbusTag
from drivers.modbus.planning import Block, Planner, TagSpec, make_block, split

__all__ = ["ModbusDriver"]

# pymodbus logs an error for every timeout, failed connect and stray answer;
# the driver reports those itself, once per outage (see bus.py).  A filter,
# not a level: an operator who sets the "pymodbus" logger to debug sees all.
_HANDLED_BY_US = (
    "No response received",
    "Failed to connect",
    "Not connected, trying to connect",
    "received pdu without a corresponding request",
    "request ask for id=",
    "request ask for transaction_id=",
)


class _DropHandled(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger("pymodbus").getEffectiveLevel() <= logging.DEBUG:
            return True
        message = record.getMessage()
        return not any(text in message for text in _HANDLED_BY_US)


logging.getLogger("pymodbus.logging").addFilter(_DropHandled())

#: Exception codes that mean "this range is not all readable": narrow it down.
#: (Some devices say 3, illegal data value, for a count they do not accept.)
SPLIT_CODES = (2, 3)


class ModbusDriver(Driver):
    def __init__(self, config: ModbusDevice, context: DriverContext) -> None:
        super().__init__(config, context)
        self.device = config
        self.conn = config.connection
        self.planner = Planner(config)
        self._bus: Bus | None = None
        # This instance, not the device name: a restarted device's old
        # instance must never release the new one's share.
        self._owner = f"{config.name}@{id(self):x}"
        self._counters = context.counters

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise DeviceUnavailable("not connected", device=self.device.name)
        return self._bus

    async def connect(self) -> None:
        bus = bus_for(self.context.links, self._owner, self.conn)
        self._bus = bus
        await bus.open()

    async def close(self) -> None:
        bus = self._bus
        self._bus = None
        if bus is None:
            return
        if self.context.links.release(bus.key, self._owner) is not None:
            bus.close()  # the last device on this link

    async def _request(self, block: Block, retries: int, sent: list[int] | None = None) -> Any:
        unit, fc, count = self.conn.unit, block.fc, block.count
        self._counters.count("requests")

        def call(client: Any) -> Any:
            if sent is not None and not sent:
                sent.append(now_ms())  # the scan's first request goes on the wire now
            if fc == 3:
                return client.read_holding_registers(block.start, count=count, device_id=unit)
            if fc == 4:
                return client.read_input_registers(block.start, count=count, device_id=unit)
            if fc == 1:
                return client.read_coils(block.start, count=count, device_id=unit)
            return client.read_discrete_inputs(block.start, count=count, device_id=unit)

        def check(reply: Any) -> bool:
            if reply.function_code != fc:
                return False
            if fc in (3, 4):
                return len(reply.registers) == count
            return len(reply.bits) >= count

        return await self.bus.execute(
            call, answer_within=self.conn.timeout, retries=retries, pause=self.conn.pause,
            check=check,
        )

    @staticmethod
    def _decode(block: Block, reply: Any, values: dict[str, Any], bad: dict[str, str]) -> None:
        if block.table in ("co", "di"):
            bits = reply.bits
            for s in block.specs:
                values[s.name] = bool(bits[s.start - block.start])
            return
        assert block.decoder is not None
        block.decoder.decode(reply.registers, values, bad)

    @staticmethod
    def _mark(block: Block, error: str, values: dict[str, Any], bad: dict[str, str]) -> None:
        for name in block.names:
            values[name] = None
            bad[name] = error

    async def _narrow(
        self, block: Block, refusal: ExceptionReply, retries: int,
        values: dict[str, Any], bad: dict[str, str],
    ) -> list[Block]:
        """Split a block refused as a whole until only the refusing tags fail."""
        halves = split(block)
        if halves is None:
            self._mark(block, str(refusal), values, bad)
            return [block]
        self._counters.count("block_splits")
        out: list[Block] = []
        for half in halves:
            try:
                reply = await self._request(half, retries)
            except ExceptionReply as err:
                if err.exception_code in SPLIT_CODES:
                    out.extend(await self._narrow(half, err, retries, values, bad))
                    continue
                self._mark(half, str(err), values, bad)
            else:
                self._decode(half, reply, values, bad)
            out.append(half)
        return out

    def _learn(self, blocks: list[Block], block: Block, leaves: list[Block], bad: list[str]) -> None:
        """Keep what a split found: the plan reads the leaves from now on."""
        for i, b in enumerate(blocks):
            if b is block:
                blocks[i : i + 1] = leaves
                break
        else:
            return  # another read learned it first
        self.context.log.info(
            "%s: %s refused as a whole; now read as %s; bad: %s",
            self.device.name, block, " ".join(str(leaf) for leaf in leaves),
            ", ".join(bad) or "none",
        )

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        ts = now_ms()
        # The sample's ts is when its first request went out, not when the
        # scan began: on a shared bus a scan may first wait for other
        # devices' requests, and that wait is no part of "the moment of the read".
        sent: list[int] = []
        names = None if tags is None else tuple(tags)
        blocks = self.planner.plan(names)
        values: dict[str, Any] = {}
        bad: dict[str, str] = {}
        bus = self.bus
        unit = self.conn.unit
        try:
            retries = bus.admit(unit, self.conn.retries)
        except UnitDown:
            self._counters.count("unit_skipped")
            raise
        answered = False
        try:
            # A snapshot: a remote read may run the same plan concurrently.
            for block in tuple(blocks):
                try:
                    reply = await self._request(block, retries, sent)
                except ExceptionReply as err:
                    self._counters.count(f"exception_{err.exception_code}")
                    if err.exception_code in SPLIT_CODES and len(block.specs) > 1:
                        leaves = await self._narrow(block, err, retries, values, bad)
                        self._learn(blocks, block, leaves,
                                    [n for n in block.names if n in bad])
                    else:
                        self._mark(block, str(err), values, bad)
                else:
                    self._decode(block, reply, values, bad)
                retries = self.conn.retries  # a probe answered: back to normal
            answered = True
        except NoAnswer as err:
            self._counters.count("unit_down")
            bus.unit_failed(unit, str(err), self.conn.unit_backoff_max)
            raise NoAnswer(f"unit {unit}: {err}", device=self.device.name) from None
        finally:
            if not answered:
                # Link lost or cancelled mid-probe: the unit's state is unknown,
                # let the next scan probe it again.
                bus.probe_over(unit)
        bus.unit_ok(unit)
        if names is not None:
            # Commissioning reads print in the order asked for; polls skip this.
            for name in names:
                if name not in values:
                    bad[name] = "no such tag"
            values = {name: values.get(name) for name in names}
        if self.conn.close_after_scan:
            await bus.idle_close()
        return Sample(ts=sent[0] if sent else ts, values=values, bad=bad)

    async def write(self, tag: str, value: Any) -> Any:
        spec = self.planner.spec(tag)
        if spec is None:
            raise WriteRefused(f"device {self.device.name} has no tag {tag!r}")
        cfg: ModbusTag = spec.tag
        if spec.table in ("di", "ir"):
            raise WriteRefused(f"{tag} is read-only ({spec.table.upper()})")
        try:
            if spec.table == "co" or spec.bit is not None:
                payload: Any = parse_bool(value)
            else:
                payload = encode_registers(cfg, value)
        except EncodeError as err:
            raise WriteRefused(f"{tag}: {err}", device=self.device.name) from None
        bus, unit = self.bus, self.conn.unit
        retries = bus.admit(unit, self.conn.retries)
        try:
            return await self._write(spec, payload, retries)
        finally:
            bus.probe_over(unit)

    async def _write(self, spec: TagSpec, payload: Any, retries: int) -> Any:
        bus, unit, tag = self.bus, self.conn.unit, spec.name

        async def send(call: Any) -> None:
            await bus.execute(
                call, answer_within=self.conn.timeout, retries=retries, pause=self.conn.pause
            )

        multiple = self.device.write_functions == "multiple"
        single = make_block([spec])
        try:
            if spec.table == "co":
                if multiple:
                    await send(lambda c: c.write_coils(spec.start, [payload], device_id=unit))
                else:
                    await send(lambda c: c.write_coil(spec.start, payload, device_id=unit))
            else:
                if spec.bit is not None:
                    # A bit of a register: read, change that bit, write back.
                    current = (await self._request(single, retries)).registers[0]
                    mask = 1 << spec.bit
                    payload = [(current | mask) if payload else (current & ~mask)]
                regs: list[int] = payload
                if len(regs) == 1 and not multiple:
                    await send(lambda c: c.write_register(spec.start, regs[0], device_id=unit))
                else:
                    await send(lambda c: c.write_registers(spec.start, regs, device_id=unit))
            values: dict[str, Any] = {}
            bad: dict[str, str] = {}
            self._decode(single, await self._request(single, retries), values, bad)
        except NoAnswer as err:
            bus.unit_failed(unit, str(err), self.conn.unit_backoff_max)
            raise DriverError(f"{tag}: no answer ({err}); the write may or may not have "
                              "happened", device=self.device.name) from None
        except ExceptionReply as err:
            bus.unit_ok(unit)  # it answered: alive, just unwilling
            raise DriverError(f"{tag}: device refused: {err}", device=self.device.name) from None
        bus.unit_ok(unit)
        if tag in bad:
            raise DriverError(f"{tag}: written, but the read-back is bad: {bad[tag]}")
        return values[tag]
