"""The demo simulators, and the driver under the real scheduler (outage and recovery)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agent.config.load import parse_site
from agent.pipeline.scheduler import DeviceRunner
from agent.sdk.readings import Sample
from drivers.serial.driver import SerialDriver
from drivers.serial.options import SerialDevice
from drivers.serial.plugin import PLUGIN
from drivers.serial.ptypeer import PtyPeer
from drivers.serial.simulator import simulate

MakeDriver = Callable[[SerialDevice], SerialDriver]
StartStream = Callable[[SerialDriver], tuple[Any, "asyncio.Task[None]"]]


async def test_simulated_instruments_through_loader_and_driver(
    tmp_path: Path, make_driver: MakeDriver, streaming: StartStream, kit: Any,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        entries = await simulate(stack, tmp_path)
        # The demo writes the entries out as YAML: they must survive the real loader.
        text = yaml.safe_dump({"gateway": {"id": "g", "site": "s"},
                               "uplink": {"mqtt": {"url": "mqtt://localhost"}},
                               "devices": entries})
        scale, weather = parse_site(text, "demo.yaml").devices
        assert isinstance(scale, SerialDevice) and isinstance(weather, SerialDevice)

        scale_driver = make_driver(scale.model_copy(update={"sample": "all"}))
        await scale_driver.connect()
        got, _ = streaming(scale_driver)
        await kit.wait_until(lambda: len({s.values["weight"] for s in got.samples
                                          if s.values.get("weight") is not None}) >= 3,
                             what="changing weights")
        await scale_driver.close()

        weather_driver = make_driver(weather)
        await weather_driver.connect()
        first = await weather_driver.read()
        assert not first.bad, first.bad
        assert -50 < first.values["temp"] < 60 and 900 < first.values["pressure"] < 1100
        await weather_driver.close()


async def test_scheduler_sees_a_pulled_port_and_recovers(tmp_path: Path, kit: Any) -> None:
    link = tmp_path / "ttyUSB-scale"
    peer = PtyPeer(link)
    config = kit.device(str(link), name="scale", sample="all", poll="200ms")
    got: list[Sample] = []
    runner = DeviceRunner(config, PLUGIN, state_dir=tmp_path, shared={},
                          sink=lambda device, samples: got.extend(samples))
    runner.log = logging.getLogger("test.serial.runner")
    task = asyncio.create_task(runner.run())
    try:
        await kit.wait_until(lambda: runner.counters.connected, what="connected")
        peer.write_nowait(b"ST,GS,+1.0 kg\r\n")
        await kit.wait_until(lambda: any(s.values.get("weight") == 1.0 for s in got))
        peer.close()  # pulled
        await kit.wait_until(lambda: got and got[-1].bad, what="bad readings")
        assert "lost" in got[-1].bad["weight"]
        assert not runner.counters.connected
        peer = PtyPeer(link)  # plugged back in
        await kit.wait_until(lambda: runner.counters.connected, within=30,
                             what="reconnect after replug")
        peer.write_nowait(b"ST,GS,+2.0 kg\r\n")
        await kit.wait_until(lambda: any(s.values.get("weight") == 2.0 for s in got))
        assert runner.counters.reconnects >= 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        peer.close()
