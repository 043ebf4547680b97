"""Stream mode on a real pty pair: the instrument writes, the driver emits."""

from __future__ import annotations

import asyncio
import functools
import operator
import os
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


def nmea(body: str) -> bytes:
    """A sentence with its checksum, computed here independently of the driver."""
    return f"${body}*{functools.reduce(operator.xor, body.encode(), 0):02X}\r\n".encode()


async def test_sample_all_emits_every_frame_in_order(
    peer: PtyPeer, make_driver: MakeDriver, streaming: StartStream, kit: Any,
) -> None:
    driver = make_driver(kit.device(peer.path, sample="all", poll="1s"))
    await driver.connect()
    got, _ = streaming(driver)
    lines = [f"{'ST' if i % 2 else 'US'},GS,+{i:>8.3f} kg\r\n" for i in range(200)]
    # Written in odd-sized pieces so frames straddle reads.
    blob = "".join(lines).encode()
    for i in range(0, len(blob), 37):
        await peer.send(blob[i:i + 37])
    await kit.wait_until(lambda: len(got.samples) >= 200, what="200 samples")
    weights = [s.values["weight"] for s in got.samples]
    assert weights == [float(i) for i in range(200)]
    assert [s.values["stable"] for s in got.samples[:3]] == [False, True, False]
    assert all(not s.bad for s in got.samples)
    assert not driver.context.counters.driver  # nothing was bad input
    await driver.close()


async def test_sample_latest_merges_a_period_into_one_sample(
    peer: PtyPeer, make_driver: MakeDriver, streaming: StartStream, kit: Any,
) -> None:
    driver = make_driver(kit.device(peer.path, sample="latest", poll="200ms"))
    await driver.connect()
    got, _ = streaming(driver)
    for i in range(50):
        await peer.send(f"US,GS,+{i}.0 kg\r\n".encode())
    await peer.send(b"ST,GS,+  99.5 kg\r\n")
    await kit.wait_until(lambda: any(s.values.get("weight") == 99.5 for s in got.samples),
                         what="the last weight")
    with_values = [s for s in got.samples if s.values]
    # 51 frames arrived within a few periods at most: far fewer samples.
    assert len(with_values) <= 5
    assert with_values[-1].values == {"weight": 99.5, "stable": True}
    # Empty periods still emit (an empty batch), so the core sees the stream alive.
    n = len(got.batches)
    await kit.wait_until(lambda: len(got.batches) >= n + 2, what="idle periods to emit")
    await driver.close()


async def test_garbage_partial_lines_and_bad_frames_are_counted_not_fatal(
    peer: PtyPeer, make_driver: MakeDriver, streaming: StartStream, kit: Any,
) -> None:
    driver = make_driver(kit.device(peer.path, sample="all", poll="1s",
                                    frame={"terminator": "\r\n", "max_length": 40}))
    await driver.connect()
    got, task = streaming(driver)
    await peer.send(b"ST,GS,+1.0 kg\r\n")
    await peer.send(os.urandom(3000).replace(b"\n", b"."))      # noise, no terminator
    await peer.send(b"\r\nST,GS,+2.0 kg\r\n")                  # resync
    await peer.send(b"HELLO WORLD\r\n")                         # does not match
    await peer.send(b"ST,GS,+\xff\xfe kg\r\n")                  # not ASCII
    await peer.send(b"ST,GS,+1.2.3 kg\r\n")                     # matches, bad number
    await peer.send(b"ST,GS,+3.0 kg\r\n")
    await kit.wait_until(lambda: any(s.values.get("weight") == 3.0 for s in got.samples),
                         what="the frame after the garbage")
    assert not task.done()
    counts = driver.context.counters.driver
    assert counts["frame_too_long"] == 1
    assert counts["no_match"] == 1
    assert counts["decode_error"] == 1
    assert counts["convert_error"] == 1
    weights = [s.values["weight"] for s in got.samples]
    assert weights == [1.0, 2.0, None, 3.0]
    assert "not a number" in got.samples[2].bad["weight"]
    await driver.close()


async def test_nmea_checksum_in_stream(
    peer: PtyPeer, make_driver: MakeDriver, streaming: StartStream, kit: Any,
) -> None:
    driver = make_driver(kit.device(
        peer.path, sample="all", checksum="nmea",
        parse={"regex": r"^\$WIXDR,C,(?P<temp>-?\d+\.\d+),C"},
        tags=[{"name": "temp", "type": "float"}]))
    await driver.connect()
    got, _ = streaming(driver)
    good = nmea("WIXDR,C,22.0,C,AIRT")
    await peer.send(good.replace(b"22.0", b"21.4"))  # checksum no longer matches
    await peer.send(b"$WIXDR,C,21.4,C,AIRT\r\n")      # none at all
    await peer.send(good)
    await kit.wait_until(lambda: got.samples, what="a sample")
    assert [s.values for s in got.samples] == [{"temp": 22.0}]
    assert driver.context.counters.driver["checksum_bad"] == 1
    assert driver.context.counters.driver["checksum_missing"] == 1
    await driver.close()


async def test_stx_etx_fixed_binary_layout(
    peer: PtyPeer, make_driver: MakeDriver, streaming: StartStream, kit: Any,
) -> None:
    # A balance sending STX "+0012.50g" ETX with noise between frames.
    driver = make_driver(kit.device(
        peer.path, sample="all", frame={"start": "\x02", "terminator": "\x03", "length": 9},
        parse={"regex": r"^(?P<weight>[-+][0-9. ]{7})g"},
        tags=[{"name": "weight", "type": "float", "unit": "g"}]))
    await driver.connect()
    got, _ = streaming(driver)
    await peer.send(b"\x00\x02+0012.50g\x03\xff\x02+  13.00g\x03\x02-0001.0g\x03")
    await kit.wait_until(lambda: len(got.samples) >= 2, what="two frames")
    assert [s.values["weight"] for s in got.samples] == [12.5, 13.0]
    assert driver.context.counters.driver["wrong_length"] == 1
    await driver.close()


async def test_start_request_is_sent_once_per_connection(
    peer: PtyPeer, make_driver: MakeDriver, kit: Any,
) -> None:
    peer.on_receive()
    driver = make_driver(kit.device(peer.path, request="SIR\r\n"))
    await driver.connect()
    await kit.wait_until(lambda: peer.received == b"SIR\r\n", what="the start command")
    await driver.close()


async def test_silence_marks_tags_bad_until_data_returns(
    peer: PtyPeer, make_driver: MakeDriver, streaming: StartStream, kit: Any,
) -> None:
    driver = make_driver(kit.device(peer.path, poll="100ms", silence="300ms"))
    await driver.connect()
    got, _ = streaming(driver)
    await kit.wait_until(lambda: any(s.bad for s in got.samples), what="a silence sample")
    bad = next(s for s in got.samples if s.bad)
    assert bad.values == {"weight": None, "stable": None}
    assert "no valid frame" in bad.bad["weight"]
    await peer.send(b"ST,GS,+5.0 kg\r\n")
    await kit.wait_until(lambda: got.samples[-1].values.get("weight") == 5.0, what="recovery")
    await driver.close()


async def test_port_closed_raises_and_a_replugged_port_works(
    tmp_path: Path, make_driver: MakeDriver, streaming: StartStream, kit: Any,
) -> None:
    link = tmp_path / "ttyUSB-by-id"
    first = PtyPeer(link)
    driver = make_driver(kit.device(str(link), sample="all"))
    await driver.connect()
    got, task = streaming(driver)
    await first.send(b"ST,GS,+1.0 kg\r\n")
    await kit.wait_until(lambda: got.samples, what="a first sample")
    first.close()  # the adapter is pulled
    await kit.wait_until(task.done, what="stream to end")
    with pytest.raises(DeviceUnavailable, match=r"lost|closed"):
        task.result()
    await driver.close()
    # While it is gone, connect fails with a clear error naming the port.
    link.unlink()
    with pytest.raises(DeviceUnavailable, match=r"cannot open .*ttyUSB-by-id: No such file"):
        await driver.connect()
    await driver.close()
    second = PtyPeer(link)  # plugged back in (a new pty behind the same name)
    try:
        await driver.connect()
        got2, _ = streaming(driver)
        await second.send(b"ST,GS,+2.0 kg\r\n")
        await kit.wait_until(lambda: got2.samples, what="a sample after replug")
        assert got2.samples[0].values["weight"] == 2.0
        await driver.close()
    finally:
        second.close()


async def test_port_is_opened_exclusively(peer: PtyPeer, make_driver: MakeDriver, kit: Any) -> None:
    one = make_driver(kit.device(peer.path))
    two = make_driver(kit.device(peer.path))
    await one.connect()
    try:
        with pytest.raises(DeviceUnavailable, match="exclusive lock held"):
            await two.connect()
    finally:
        await two.close()
        await one.close()


async def test_one_shot_read_of_a_stream_device(
    peer: PtyPeer, make_driver: MakeDriver, kit: Any,
) -> None:
    driver = make_driver(kit.device(peer.path, timeout="5s"))
    await driver.connect()
    reading = asyncio.create_task(driver.read())
    await kit.wait_until(lambda: driver._reply is not None, what="the read to wait")
    await peer.send(b"US,GS,-4.5 kg\r\n")
    sample = await reading
    assert sample.values == {"weight": -4.5, "stable": False} and not sample.bad
    await driver.close()


async def test_fixed_length_frames_without_terminator(
    peer: PtyPeer, make_driver: MakeDriver, streaming: StartStream, kit: Any,
) -> None:
    # A counter sending 8-byte records back to back, no separator at all.
    driver = make_driver(kit.device(
        peer.path, sample="all", frame={"length": 8},
        parse={"regex": r"^C(?P<count>\d{6})(?P<ok>[01])$"},
        tags=[{"name": "count", "type": "int"}, {"name": "ok", "type": "bool"}]))
    await driver.connect()
    got, _ = streaming(driver)
    records = b"".join(b"C%06d%d" % (n, n % 2) for n in range(100))
    for i in range(0, len(records), 13):
        await peer.send(records[i:i + 13])
    await kit.wait_until(lambda: len(got.samples) >= 100, what="100 records")
    assert [s.values["count"] for s in got.samples] == list(range(100))
    assert [s.values["ok"] for s in got.samples[:2]] == [False, True]
    await driver.close()


async def test_xor_hex_checksum_with_separator_and_utf8(
    peer: PtyPeer, make_driver: MakeDriver, streaming: StartStream, kit: Any,
) -> None:
    driver = make_driver(kit.device(
        peer.path, sample="all", checksum={"type": "xor", "separator": ";"},
        frame={"terminator": "\n", "encoding": "utf-8"},
        parse={"regex": r"^(?P<label>\w+)=(?P<value>[-\d.]+)°C$"},
        tags=[{"name": "label", "type": "string"}, {"name": "value", "type": "float"}]))
    await driver.connect()
    got, _ = streaming(driver)

    def framed(text: str) -> bytes:
        data = text.encode("utf-8")
        return data + b";" + b"%02X" % functools.reduce(operator.xor, data, 0) + b"\n"

    good = framed("Küche=21.5°C")
    await peer.send(good[:5])              # split inside the multi-byte 'ü'
    await peer.send(good[5:])
    await peer.send(framed("x=1°C")[:-3] + b"00\n")   # wrong checksum
    await peer.send(b"\xc3(=1;" + b"%02X" % (0xC3 ^ 0x28 ^ 0x3D ^ 0x31) + b"\n")  # bad UTF-8
    await peer.send(framed("Bad=2.0°C"))
    await kit.wait_until(lambda: len(got.samples) >= 2, what="two frames")
    assert [s.values for s in got.samples] == [{"label": "Küche", "value": 21.5},
                                               {"label": "Bad", "value": 2.0}]
    counts = driver.context.counters.driver
    assert counts["checksum_bad"] == 1 and counts["decode_error"] == 1
    await driver.close()
