"""The plugin as the core sees it: entry points, cheap import, the demo simulator."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

from agent.config.plugins import load_plugins
from agent.sdk.driver import DriverPlugin
from drivers.modbus.options import ModbusDevice, ModbusTag
from tests.modbus.helpers_modbus import make_driver


def test_entry_point_gives_the_plugin() -> None:
    plugin = load_plugins()["modbus"]
    assert isinstance(plugin, DriverPlugin)
    assert plugin.config_model is ModbusDevice
    assert plugin.check is not None
    assert plugin.address_field == "address"


def test_check_imports_no_protocol_library(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from agent.config.load import parse_site\n"
        "site = parse_site(open(sys.argv[1]).read())\n"
        "assert site.devices\n"
        "bad = [m for m in ('pymodbus', 'asyncua', 'serial') if m in sys.modules]\n"
        "print('LOADED', bad)\n"
    )
    sample = Path(__file__).resolve().parents[2] / "drivers" / "modbus" / "sample.yaml"
    site = tmp_path / "site.yaml"
    site.write_text("gateway: {id: g, site: s}\nuplink: {mqtt: {url: 'mqtt://127.0.0.1'}}\n"
                    + sample.read_text())
    out = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True,
                         text=True, timeout=60, check=True)
    assert "LOADED []" in out.stdout


def test_adhoc_tag_like_the_read_command_builds() -> None:
    # `edge-agent read --address HR100 --type float32 --order CDAB` builds this tag.
    tag = ModbusTag.model_validate({"name": "HR100", "address": "HR100", "type": "float32",
                                    "order": "CDAB"})
    assert tag.kind == "float32"
    bare = ModbusTag.model_validate({"name": "40001", "address": "40001", "type": None,
                                     "order": None})
    assert bare.kind == "uint16"


async def test_simulator_values_change_and_setpoint_writes(tmp_path: Path) -> None:
    sims = {ep.name: ep for ep in entry_points(group="edge_agent.simulators")}
    simulate = sims["modbus"].load()
    async with contextlib.AsyncExitStack() as stack:
        entries = await simulate(stack, tmp_path)
        assert len(entries) == 1
        cfg = ModbusDevice.model_validate(entries[0])
        driver = make_driver(cfg)
        await driver.connect()
        try:
            first = await driver.read()
            assert not first.bad
            assert 50 < first.values["oil_temp"] < 70
            assert isinstance(first.values["running"], bool)
            assert isinstance(first.values["alarm"], bool)
            # The counter moves every half second: wait for it (no fixed sleep).
            deadline = time.monotonic() + 20
            while (await driver.read()).values["cycles"] == first.values["cycles"]:
                assert time.monotonic() < deadline, "simulator values do not change"
                await asyncio.sleep(0.05)
            assert await driver.write("setpoint", 275) == 275
        finally:
            await driver.close()
