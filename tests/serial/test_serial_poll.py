"""Poll mode on a real pty pair: request out, reply in, or no reply at all."""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.sdk.driver import DeviceUnavailable
from drivers.serial.driver import SerialDriver
from drivers.serial.options import SerialDevice
from drivers.serial.ptypeer import PtyPeer

MakeDriver = Callable[[SerialDevice], SerialDriver]
StartStream = Callable[[SerialDriver], tuple[Any, "asyncio.Task[None]"]]

AIR_RULES = [
    {"regex": r"^\$WIXDR,C,(?P<temp>-?\d+\.\d+),C,AIRT"},
    {"regex": r"^\$WIMWV,(?P<wind>\d+\.\d+),R"},
]
AIR_TAGS = [{"name": "temp", "type": "float", "unit": "degC"},
            {"name": "wind", "type": "float", "unit": "deg"}]


def nmea(body: str) -> bytes:
    return f"${body}*{functools.reduce(operator.xor, body.encode(), 0):02X}\r\n".encode()


def answer(peer: PtyPeer, reply: Callable[[int], bytes | None]) -> list[bytes]:
    """Play an instrument that answers each 'R\\r\\n' with ``reply(n)``."""
    requests: list[bytes] = []
    pending = bytearray()

    def on_data(data: bytes) -> None:
        pending.extend(data)
        while b"\r\n" in pending:
            line, _, rest = bytes(pending).partition(b"\r\n")
            pending[:] = rest
            requests.append(line)
            out = reply(len(requests))
            if out:
                peer.write_nowait(out)

    peer.on_receive(on_data)
    return requests


def air(port: str, kit: Any, **options: Any) -> SerialDevice:
    base = {"mode": "poll", "request": "R\r\n", "timeout": "500ms", "poll": "5s",
            "checksum": "nmea", "parse": AIR_RULES, "tags": AIR_TAGS}
    device: SerialDevice = kit.device(port, **{**base, **options})
    return device


async def test_request_and_reply(peer: PtyPeer, make_driver: MakeDriver, kit: Any) -> None:
    requests = answer(peer, lambda n: nmea(f"WIXDR,C,{20 + n}.5,C,AIRT"))
    driver = make_driver(air(peer.path, kit))
    assert not driver.push
    await driver.connect()
    first = await driver.read()
    second = await driver.read()
    assert requests == [b"R", b"R"]
    assert first.values == {"temp": 21.5, "wind": None}
    assert first.bad == {"wind": "not in reply"}
    assert second.values["temp"] == 22.5
    assert (await driver.read(["temp"])).values == {"temp": 23.5}
    await driver.close()


async def test_reply_of_several_frames(peer: PtyPeer, make_driver: MakeDriver, kit: Any) -> None:
    answer(peer, lambda n: nmea("WIXDR,C,-1.5,C,AIRT") + b"garbage\r\n"
           + nmea("WIMWV,270.0,R,3.0,M,A"))
    driver = make_driver(air(peer.path, kit, reply_frames=2))
    await driver.connect()
    sample = await driver.read()
    assert sample.values == {"temp": -1.5, "wind": 270.0} and not sample.bad
    # The checksum is checked before anything else: garbage fails it first.
    assert driver.context.counters.driver["checksum_missing"] == 1
    await driver.close()


async def test_a_reply_that_never_comes(peer: PtyPeer, make_driver: MakeDriver, kit: Any) -> None:
    requests = answer(peer, lambda n: None)  # the instrument is mute
    driver = make_driver(air(peer.path, kit))
    await driver.connect()
    loop = asyncio.get_running_loop()
    started = loop.time()
    sample = await driver.read()
    waited = loop.time() - started
    assert requests == [b"R"]
    assert sample.values == {"temp": None, "wind": None}
    assert sample.bad == {"temp": "no reply within 0.5s", "wind": "no reply within 0.5s"}
    assert 0.45 <= waited < 5.0
    assert driver.context.counters.driver["timeout"] == 1
    # The port is still fine: the next poll works when the instrument answers.
    answer(peer, lambda n: nmea("WIXDR,C,1.0,C,AIRT"))
    assert (await driver.read()).values["temp"] == 1.0
    await driver.close()


async def test_bad_checksum_reply_is_dropped_and_times_out(
    peer: PtyPeer, make_driver: MakeDriver, kit: Any,
) -> None:
    answer(peer, lambda n: nmea("WIXDR,C,5.0,C,AIRT").replace(b"5.0", b"6.0"))
    driver = make_driver(air(peer.path, kit, timeout="200ms"))
    await driver.connect()
    sample = await driver.read()
    assert sample.values["temp"] is None
    assert driver.context.counters.driver["checksum_bad"] == 1
    await driver.close()


async def test_a_late_reply_does_not_answer_the_next_request(
    peer: PtyPeer, make_driver: MakeDriver, kit: Any,
) -> None:
    # The instrument answers request n with the value n, but only after the
    # agent has given up on it; the next read must not take the stale value.
    driver = make_driver(air(peer.path, kit, timeout="300ms"))
    requests = answer(peer, lambda n: None)
    await driver.connect()
    assert (await driver.read()).values["temp"] is None
    peer.write_nowait(nmea("WIXDR,C,1.0,C,AIRT"))  # the late answer to request 1
    await kit.wait_until(lambda: driver.context.counters.driver["unsolicited"] == 1,
                         what="the late answer to be seen and dropped")
    answer(peer, lambda n: nmea(f"WIXDR,C,{n + 1}.0,C,AIRT"))
    assert (await driver.read()).values["temp"] == 2.0
    assert len(requests) == 1
    await driver.close()


async def test_port_lost_while_waiting_for_a_reply(
    tmp_path: Path, make_driver: MakeDriver, kit: Any,
) -> None:
    peer = PtyPeer(tmp_path / "ttyAIR")
    answer(peer, lambda n: None)
    driver = make_driver(air(peer.path, kit, timeout="4s"))
    await driver.connect()
    reading = asyncio.create_task(driver.read())
    await kit.wait_until(lambda: peer.received, what="the request")
    peer.close()
    with pytest.raises(DeviceUnavailable, match="lost"):
        await reading
    with pytest.raises(DeviceUnavailable):
        await driver.read()
    await driver.close()


async def test_an_incomplete_reply_says_so(
    peer: PtyPeer, make_driver: MakeDriver, kit: Any,
) -> None:
    answer(peer, lambda n: nmea("WIXDR,C,4.0,C,AIRT"))  # the wind sentence never comes
    driver = make_driver(air(peer.path, kit, reply_frames=2, timeout="300ms"))
    await driver.connect()
    sample = await driver.read()
    assert sample.values == {"temp": 4.0, "wind": None}
    assert sample.bad == {"wind": "reply incomplete after 0.3s"}
    assert driver.context.counters.driver["timeout"] == 1
    await driver.close()
