"""RS-485 multi-drop: poll devices sharing one port take turns, each gets its reply."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config.load import parse_site
from agent.sdk.counters import DeviceCounters
from agent.sdk.driver import DeviceUnavailable, DriverContext
from agent.sdk.links import SharedLinks
from drivers.serial.driver import SerialDriver
from drivers.serial.options import SerialDevice
from drivers.serial.ptypeer import PtyPeer

MakeDriver = Callable[[SerialDevice], SerialDriver]
StartStream = Callable[[SerialDriver], tuple[Any, "asyncio.Task[None]"]]


def addressed(port: str, address: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"t{address}", "driver": "serial",
        "connection": {"port": port, "baudrate": 9600},
        "mode": "poll", "request": f"#{address}\r", "timeout": "1s", "poll": "5s",
        "frame": {"terminator": "\r"},
        # The address in the regex: a late reply from another instrument
        # on the line can never pass for this one's.
        "parse": {"regex": rf"^>(?P<addr>{address})(?P<temp>[-+]\d+\.\d)"},
        "tags": [{"name": "temp", "type": "float"}, {"name": "addr", "type": "string"}],
        **extra,
    }


def drivers_on_one_bus(tmp_path: Path, *raw: dict[str, Any]) -> list[SerialDriver]:
    from drivers.serial.options import SerialDevice

    links = SharedLinks()  # what the scheduler gives all devices of the driver
    return [SerialDriver(SerialDevice.model_validate(r),
                         DriverContext(tmp_path, DeviceCounters(), logging.getLogger("t"),
                                       links=links)) for r in raw]


def answer_by_address(peer: PtyPeer, delay: float = 0.05) -> list[bytes]:
    """Instruments 01..09 answer '#NN\\r' with '>NN+NN.5\\r' after a turnaround delay."""
    seen: list[bytes] = []
    loop = asyncio.get_running_loop()

    def on_data(data: bytes) -> None:
        for request in data.split(b"\r"):
            if request.startswith(b"#"):
                seen.append(request)
                addr = request[1:3]
                loop.call_later(delay, peer.write_nowait,
                                b">" + addr + b"+" + addr + b".5\r")

    peer.on_receive(on_data)
    return seen


async def test_each_device_gets_its_own_reply(tmp_path: Path, peer: PtyPeer) -> None:
    seen = answer_by_address(peer)
    one, two, three = drivers_on_one_bus(tmp_path, addressed(peer.path, "01"),
                                         addressed(peer.path, "02"), addressed(peer.path, "03"))
    for d in (one, two, three):
        await d.connect()
    assert one._line is two._line is three._line
    for _ in range(3):
        samples = await asyncio.gather(one.read(), two.read(), three.read())
        assert [s.values for s in samples] == [
            {"temp": 1.5, "addr": "01"}, {"temp": 2.5, "addr": "02"}, {"temp": 3.5, "addr": "03"}]
    assert len(seen) == 9
    await one.close()
    assert (await two.read()).values["temp"] == 2.5  # the line stays open for the others
    await two.close()
    await three.close()
    # The last one closed the port: it can be opened exclusively again.
    again, = drivers_on_one_bus(tmp_path, addressed(peer.path, "01"))
    await again.connect()
    await again.close()


async def test_a_late_reply_from_another_instrument_is_not_taken(
    tmp_path: Path, peer: PtyPeer,
) -> None:
    loop = asyncio.get_running_loop()

    def on_data(data: bytes) -> None:
        for request in data.split(b"\r"):
            if request == b"#01":
                # Answers too late: after device 02 has asked, before 02 answers.
                loop.call_later(0.35, peer.write_nowait, b">01+1.5\r")
            elif request == b"#02":
                loop.call_later(0.2, peer.write_nowait, b">02+2.5\r")

    peer.on_receive(on_data)
    slow, fast = drivers_on_one_bus(tmp_path, addressed(peer.path, "01", timeout="300ms"),
                                    addressed(peer.path, "02"))
    await slow.connect()
    await fast.connect()
    a, b = await asyncio.gather(slow.read(), fast.read())
    assert a.bad == {"temp": "no reply within 0.3s", "addr": "no reply within 0.3s"}
    assert b.values == {"temp": 2.5, "addr": "02"} and not b.bad
    await slow.close()
    await fast.close()


async def test_a_stream_device_cannot_share_and_settings_must_match(
    tmp_path: Path, peer: PtyPeer,
) -> None:
    stream_raw = addressed(peer.path, "01", mode="stream")
    del stream_raw["request"]
    poller, streamer, other_baud = drivers_on_one_bus(
        tmp_path, addressed(peer.path, "01"), stream_raw,
        addressed(peer.path, "02", connection={"port": peer.path, "baudrate": 19200}))
    await poller.connect()
    with pytest.raises(DeviceUnavailable, match="only poll-mode devices can share"):
        await streamer.connect()
    with pytest.raises(DeviceUnavailable, match="must be equal"):
        await other_baud.connect()
    await poller.close()


async def test_a_lost_bus_fails_every_device(tmp_path: Path, kit: Any) -> None:
    peer = PtyPeer(tmp_path / "ttyRS485")
    peer.on_receive()  # nobody answers
    one, two = drivers_on_one_bus(tmp_path, addressed(peer.path, "01", timeout="4s"),
                                  addressed(peer.path, "02", timeout="4s"))
    await one.connect()
    await two.connect()
    reads = [asyncio.create_task(one.read()), asyncio.create_task(two.read())]
    await kit.wait_until(lambda: peer.received, what="the first request")
    peer.close()
    results = await asyncio.gather(*reads, return_exceptions=True)
    assert all(isinstance(r, DeviceUnavailable) for r in results), results
    await one.close()
    await two.close()


def test_check_warns_only_when_sharing_cannot_work() -> None:
    import yaml

    def warnings(*devices: dict[str, Any]) -> list[str]:
        text = yaml.safe_dump({"gateway": {"id": "g", "site": "s"},
                               "uplink": {"mqtt": {"url": "mqtt://localhost"}},
                               "devices": list(devices)})
        return list(parse_site(text).warnings)

    assert warnings(addressed("/dev/ttyUSB0", "01"), addressed("/dev/ttyUSB0", "02")) == []
    slow = addressed("/dev/ttyUSB0", "02", connection={"port": "/dev/ttyUSB0", "baudrate": 1200})
    assert "equal connection" in warnings(addressed("/dev/ttyUSB0", "01"), slow)[0]


async def test_a_by_id_link_and_its_device_are_one_line(tmp_path: Path, peer: PtyPeer) -> None:
    answer_by_address(peer)
    via_link, via_device = drivers_on_one_bus(
        tmp_path, addressed(peer.path, "01"), addressed(peer.slave_path, "02"))
    await via_link.connect()
    await via_device.connect()
    assert via_link._line is via_device._line
    a, b = await asyncio.gather(via_link.read(), via_device.read())
    assert (a.values["temp"], b.values["temp"]) == (1.5, 2.5)
    await via_link.close()
    await via_device.close()


async def test_devices_connecting_at_once_join_one_line(tmp_path: Path, peer: PtyPeer) -> None:
    answer_by_address(peer)
    one, two = drivers_on_one_bus(tmp_path, addressed(peer.path, "01"),
                                  addressed(peer.path, "02"))
    await asyncio.gather(one.connect(), two.connect())  # the second waits for the first's open
    assert one._line is two._line
    assert (await two.read()).values["temp"] == 2.5
    await asyncio.gather(one.close(), two.close())


async def test_joining_a_port_that_fails_to_open(tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyGONE")
    one, two = drivers_on_one_bus(tmp_path, addressed(missing, "01"), addressed(missing, "02"))
    results = await asyncio.gather(one.connect(), two.connect(), return_exceptions=True)
    assert all(isinstance(r, DeviceUnavailable) and "No such file" in str(r) for r in results)
    assert len(one.context.links) == 0
