"""Simulated serial instruments for ``edge-agent demo``, each on a pty pair.

- ``demo-scale``: a weighing scale on a filling line, streaming ten lines a
  second (``ST,GS,+  12.345 kg``): the weight climbs while a container fills
  (unstable, ``US``), holds (stable, ``ST``), then drops to the tare.  About
  one line in 150 arrives corrupted, so the bad-input counters move.
- ``demo-weather``: an NMEA-style weather sensor answering ``R`` with two
  checksummed sentences (air temperature and pressure, wind).

Both run in-process as tasks; the exit stack cancels them and hangs up the
ptys.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import operator
import random
import time
from pathlib import Path
from typing import Any

from drivers.serial.ptypeer import PtyPeer

__all__ = ["scale_line", "simulate", "weather_reply"]

FILL_SECONDS = 20.0
TARGET_KG = 25.0


def scale_line(t: float, rng: random.Random) -> bytes:
    """What the scale says at time ``t`` of its fill cycle."""
    phase = t % FILL_SECONDS
    if phase < 12.0:
        weight, state = TARGET_KG * phase / 12.0 + rng.uniform(-0.02, 0.02), "US"
    elif phase < 18.0:
        weight, state = TARGET_KG + 0.004 * math.sin(t), "ST"
    else:
        weight, state = 0.0, "ST"
    line = f"{state},GS,{'+' if weight >= 0 else '-'}{abs(weight):>9.3f} kg\r\n".encode()
    if rng.random() < 1 / 150:
        # A loose connector: a chopped line, then line noise.
        line = line[: rng.randint(1, len(line) - 3)] + bytes([0xFF, 0x00, 0x7F])
    return line


def _nmea(body: str) -> bytes:
    checksum = functools.reduce(operator.xor, body.encode("ascii"), 0)
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


def weather_reply(t: float) -> bytes:
    temp = 18.0 + 4.0 * math.sin(t / 60.0)
    baro = 1.0132 + 0.002 * math.sin(t / 300.0)
    wind_dir = (200.0 + 40.0 * math.sin(t / 30.0)) % 360.0
    wind_speed = max(0.0, 3.0 + 2.0 * math.sin(t / 7.0))
    return (_nmea(f"WIXDR,C,{temp:.1f},C,AIRT,P,{baro:.4f},B,BARO")
            + _nmea(f"WIMWV,{wind_dir:.1f},R,{wind_speed:.1f},M,A"))


async def _run_scale(peer: PtyPeer) -> None:
    rng = random.Random()
    start = time.monotonic()
    while True:
        # Dropped when the pty is full (nobody reading): a real scale does
        # not wait for its listener either.
        peer.write_nowait(scale_line(time.monotonic() - start, rng))
        await asyncio.sleep(0.1)


def _answer_weather(peer: PtyPeer) -> None:
    start = time.monotonic()
    pending = bytearray()

    def on_request(data: bytes) -> None:
        pending.extend(data)
        while (end := pending.find(b"\r\n")) >= 0:
            request = bytes(pending[:end])
            del pending[: end + 2]
            if request == b"R":
                peer.write_nowait(weather_reply(time.monotonic() - start))

    peer.on_receive(on_request)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def simulate(stack: contextlib.AsyncExitStack, workdir: Path) -> list[dict[str, Any]]:
    """Start both instruments; return their device entries for the site file."""
    scale = PtyPeer(workdir / "tty-demo-scale")
    stack.callback(scale.close)
    task = asyncio.create_task(_run_scale(scale), name="simulator:serial-scale")
    stack.push_async_callback(_cancel, task)

    weather = PtyPeer(workdir / "tty-demo-weather")
    stack.callback(weather.close)
    _answer_weather(weather)

    return [
        {
            "name": "demo-scale",
            "driver": "serial",
            "connection": {"port": scale.path, "baudrate": 9600},
            "mode": "stream",
            "sample": "latest",
            "poll": "1s",
            "silence": "5s",
            "frame": {"terminator": "\r\n", "max_length": 64},
            "parse": {"regex": r"^(?P<state>ST|US),GS,(?P<weight>[-+][ 0-9.]+) ?kg"},
            "tags": [
                {"name": "weight", "type": "float", "unit": "kg"},
                {"name": "stable", "group": "state", "map": {"ST": True, "US": False}},
            ],
        },
        {
            "name": "demo-weather",
            "driver": "serial",
            "connection": {"port": weather.path, "baudrate": 4800},
            "mode": "poll",
            "request": "R\r\n",
            "timeout": "500ms",
            "reply_frames": 2,
            "poll": "2s",
            "checksum": "nmea",
            "parse": [
                {"regex": r"^\$WIXDR,C,(?P<temp>-?\d+\.\d+),C,AIRT,P,(?P<baro>\d+\.\d+),B,BARO"},
                {"regex": r"^\$WIMWV,(?P<wind_dir>\d+\.\d+),R,(?P<wind_speed>\d+\.\d+),M,A"},
            ],
            "tags": [
                {"name": "temp", "type": "float", "unit": "degC"},
                {"name": "pressure", "group": "baro", "type": "float", "scale": 1000,
                 "unit": "hPa"},
                {"name": "wind_dir", "type": "float", "unit": "deg"},
                {"name": "wind_speed", "type": "float", "unit": "m/s"},
            ],
        },
    ]
