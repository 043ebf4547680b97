"""The demo's simulated OPC UA server: loadable entries, values that change."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from pathlib import Path
from typing import Any

from agent.config.load import parse_site
from agent.sdk.readings import Sample
from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.simulator import simulate

HEAD = "gateway: {id: gw-1, site: plant}\nuplink: {mqtt: {url: mqtt://127.0.0.1}}\n"


async def test_demo_device_loads_and_changes(tmp_path: Path, context: Any, wait: Any) -> None:
    import yaml

    async with contextlib.AsyncExitStack() as stack:
        entries = await simulate(stack, tmp_path)
        text = HEAD + "devices:\n" + textwrap.indent(yaml.safe_dump(entries), "  ")
        cfg, = parse_site(text, "demo.yaml").devices
        seen: list[Sample] = []
        drv = OpcuaDriver(cfg, context)  # type: ignore[arg-type]
        await drv.connect()
        stream = asyncio.create_task(drv.stream(seen.extend))
        try:
            await wait(lambda: len({s.values.get("count") for s in seen} - {None}) >= 3,
                       what="the counter to move")
            assert await drv.write("setpoint", 321) == 321
        finally:
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream
            await drv.close()
    assert {"speed", "temperature", "count"} <= {k for s in seen for k in s.values}
    assert all(not s.bad for s in seen)
