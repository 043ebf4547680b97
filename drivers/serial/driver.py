"""The serial ASCII driver: bytes -> frames -> checked -> text -> tag values.

Everything per frame happens synchronously in the port's ``data_received``
callback (framing, checksum, decoding, regex, conversion); the coroutines
only wait: ``stream`` for a period boundary or a batch, ``read`` for a reply.
So a flood of garbage costs CPU proportional to its bytes, never memory,
and never blocks other devices longer than one chunk (at most 1 KiB).

Modes:
- ``stream`` (push): the instrument talks by itself.  ``sample: all`` hands
  every parsed frame to ``emit`` (batched per wake-up); ``sample: latest``
  merges the frames of one ``poll`` period and emits once at its end, so a
  scale sending 10 lines a second does not flood the uplink.
- ``poll``: ``read`` sends ``request`` and waits up to ``timeout`` for
  ``reply_frames`` parsed frames.  A reply that never comes makes the tags
  bad ("no reply within ..."); the port stays open, the next poll tries again.

A vanished port (USB adapter pulled, pty closed) raises DeviceUnavailable
from ``stream``/``read``; the scheduler closes, backs off and reconnects,
and logs the outage once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

from agent.sdk.driver import DeviceConfig, DeviceUnavailable, Driver, DriverContext, Emit
from agent.sdk.readings import Sample, now_ms
from drivers.serial.badinput import BadInput
from drivers.serial.checksum import make_verifier
from drivers.serial.line import LineBusy, SerialLine, attach, detach
from drivers.serial.options import SerialDevice, to_bytes
from drivers.serial.parsing import Parsed, Parser
from drivers.serial.port import PortClosed

__all__ = ["SerialDriver"]


class _Reply:
    """A read waiting for ``needed`` parsed frames; their values merged."""

    __slots__ = ("bad", "done", "needed", "values")

    def __init__(self, needed: int) -> None:
        self.needed = needed
        self.values: dict[str, Any] = {}
        self.bad: dict[str, str] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, parsed: Parsed) -> None:
        _merge(self.values, self.bad, parsed)
        self.needed -= 1
        if self.needed <= 0 and not self.done.done():
            self.done.set_result(None)


def _merge(values: dict[str, Any], bad: dict[str, str], parsed: Parsed) -> None:
    # A later good value clears an earlier conversion error of the same tag.
    values.update(parsed.values)
    for tag in parsed.values:
        if tag in parsed.bad:
            bad[tag] = parsed.bad[tag]
        else:
            bad.pop(tag, None)


class SerialDriver(Driver):
    def __init__(self, config: DeviceConfig, context: DriverContext) -> None:
        if not isinstance(config, SerialDevice):
            raise TypeError(f"serial driver got a {type(config).__name__}")
        super().__init__(config, context)
        self.cfg = config
        self.name = config.name
        self.push = config.mode == "stream"
        self._all = config.sample == "all"
        self._tags = config.tag_names()
        # Planned once: checksum, rules and converters (the framer is the line's).
        self._verify = make_verifier(config.checksum) if config.checksum is not None else None
        self._parser = Parser(config.parse, config.tags)
        self._encoding = config.frame.encoding
        self._request = to_bytes(config.request) if config.request is not None else None
        self._bad = BadInput(context.counters, context.log, config.name)
        self._line: SerialLine | None = None
        self._wake = asyncio.Event()
        self._reply: _Reply | None = None
        # stream, sample: all -> frames not yet emitted
        self._pending: list[Sample] = []
        # stream, sample: latest -> merged values of the current period
        self._latest: dict[str, Any] = {}
        self._latest_bad: dict[str, str] = {}
        self._latest_ts = 0
        self._last_frame = time.monotonic()

    # -- connection ------------------------------------------------------
    async def connect(self) -> None:
        self._pending, self._latest, self._latest_bad = [], {}, {}
        try:
            line = await attach(self.context.links, self, self.cfg.connection, self.cfg.frame,
                                shareable=not self.push)
        except (PortClosed, LineBusy) as err:
            raise DeviceUnavailable(str(err), device=self.cfg.name) from None
        self._line = line
        self._last_frame = time.monotonic()
        if self.push and self._request is not None:
            # Stream instruments often need a command to start talking
            # (e.g. "SIR" on a scale); send it once per connection.
            self._write(line, self._request)

    async def close(self) -> None:
        line, self._line = self._line, None
        if line is not None:
            await detach(self.context.links, line, self)

    def _require_line(self) -> SerialLine:
        line = self._line
        if line is None or line.closed:
            error = line.port.error if line is not None else None
            raise DeviceUnavailable(error or f"port {self.cfg.connection.port} is not open",
                                    device=self.cfg.name)
        return line

    def _write(self, line: SerialLine, data: bytes) -> None:
        try:
            line.write(data)
        except PortClosed as err:
            raise DeviceUnavailable(str(err), device=self.cfg.name) from None

    # -- called by the line (inside data_received) -------------------------
    def on_lost(self, error: str) -> None:
        self._wake.set()
        reply = self._reply
        if reply is not None and not reply.done.done():
            reply.done.set_exception(DeviceUnavailable(error, device=self.cfg.name))

    def on_dropped(self, reason: str, n: int) -> None:
        self._bad.note(reason, n=n)

    def on_frame(self, frame: bytes, ts: int) -> None:
        parsed = self._parse_frame(frame)
        if parsed is not None:
            self._deliver(parsed, ts)

    def _parse_frame(self, frame: bytes) -> Parsed | None:
        if self._verify is not None:
            checked = self._verify(frame)
            if isinstance(checked, str):
                self._bad.note(checked, repr(frame[:60]))
                return None
            frame = checked
        try:
            text = frame.decode(self._encoding)
        except UnicodeDecodeError as err:
            self._bad.note("decode_error", f"{err.reason} in {frame[:60]!r}")
            return None
        parsed = self._parser.parse(text)
        if parsed is None:
            self._bad.note("no_match", repr(text[:60]))
            return None
        if parsed.bad:
            self._bad.note("convert_error", "; ".join(parsed.bad.values()))
        return parsed

    def _deliver(self, parsed: Parsed, ts: int) -> None:
        self._last_frame = time.monotonic()
        reply = self._reply
        if reply is not None:
            reply.add(parsed)
            if not self.push:
                return
        elif not self.push:
            # Poll mode and nobody asked: a late reply to a timed-out request.
            self._bad.note("unsolicited", "frame arrived with no request pending")
            return
        if self._all:
            self._pending.append(Sample(ts, parsed.values, parsed.bad))
            self._wake.set()
        else:
            _merge(self._latest, self._latest_bad, parsed)
            self._latest_ts = ts

    # -- stream mode -------------------------------------------------------
    async def stream(self, emit: Emit) -> None:
        port = self._require_line().port
        period = self.cfg.poll
        next_tick = math.ceil(time.time() / period) * period
        while True:
            delay = next_tick - time.time()
            if delay > 0 and not port.closed.is_set() and not self._pending:
                self._wake.clear()
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            batch = self._take_batch()
            if port.closed.is_set():
                if batch:
                    emit(batch)  # what arrived before the loss is good data
                raise DeviceUnavailable(port.error or "port closed", device=self.cfg.name)
            now = time.time()
            if now >= next_tick:
                batch.extend(self._end_of_period())
                # Emitting every period, even nothing, tells the core we live.
                emit(batch)
                next_tick += period * max(1, math.ceil((now - next_tick) / period))
            elif batch:
                emit(batch)

    def _take_batch(self) -> list[Sample]:
        batch, self._pending = self._pending, []
        return batch

    def _end_of_period(self) -> list[Sample]:
        out: list[Sample] = []
        if self._latest:
            out.append(Sample(self._latest_ts, self._latest, self._latest_bad))
            self._latest, self._latest_bad = {}, {}
        silence = self.cfg.silence
        if not out and silence is not None and time.monotonic() - self._last_frame >= silence:
            out.append(Sample.all_bad(self._tags, f"no valid frame for {silence:g}s"))
        return out

    # -- poll mode (and one-shot reads of a stream device) -----------------
    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        line = self._require_line()
        names = list(tags) if tags else self._tags
        if self._reply is not None:
            raise DeviceUnavailable("a read is already waiting for this device",
                                    device=self.cfg.name)
        if self.push:
            # One-shot read of a stream device: the next frame, whatever it is.
            return await self._await_reply(line, _Reply(1), names)
        # Devices sharing a multi-drop line take turns; the timeout counts
        # from our own request, not from the wait for the line.
        async with line.lock:
            line = self._require_line()
            line.hold(self)
            try:
                return await self._await_reply(line, _Reply(self.cfg.reply_frames), names,
                                               request=self._request)
            finally:
                line.release()

    async def _await_reply(self, line: SerialLine, reply: _Reply, names: list[str],
                           request: bytes | None = None) -> Sample:
        self._reply = reply
        ts = now_ms()
        try:
            if request is not None:
                self._write(line, request)
            try:
                async with asyncio.timeout(self.cfg.timeout):
                    await reply.done
            except TimeoutError:
                pass
        finally:
            self._reply = None
        return self._reply_sample(reply, names, ts)

    def _reply_sample(self, reply: _Reply, names: list[str], ts: int) -> Sample:
        timed_out = reply.needed > 0
        if timed_out:
            self._bad.note("timeout", f"{reply.needed} frame(s) missing after "
                                      f"{self.cfg.timeout:g}s")
        if not reply.values:
            missing = f"no reply within {self.cfg.timeout:g}s"
        elif timed_out:
            missing = f"reply incomplete after {self.cfg.timeout:g}s"
        else:
            missing = "not in reply"  # a complete reply without this tag's group
        values: dict[str, Any] = {}
        bad: dict[str, str] = {}
        for name in names:
            if name in reply.values:
                values[name] = reply.values[name]
                if name in reply.bad:
                    bad[name] = reply.bad[name]
            else:
                values[name] = None
                bad[name] = missing
        return Sample(ts, values, bad)
