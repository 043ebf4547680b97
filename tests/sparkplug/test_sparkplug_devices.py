"""Devices in a Sparkplug session: down (DDEATH) and back (DBIRTH), added or changed by config."""

from __future__ import annotations

import contextlib
from pathlib import Path

import yaml

from agent.config.load import parse_site
from tests.conftest import Broker, async_wait_until
from tests.sparkplug.helpers_sparkplug import (
    DEVICE,
    SpCollector,
    press,
    running_agent,
    site_dict,
    start_sim,
)


async def test_tck_id_topics_ddeath_device_down_then_dbirth_when_back(
    broker: Broker, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sim_stack = contextlib.AsyncExitStack()
        sim = await start_sim(sim_stack)
        port = sim.port
        stack.push_async_callback(sim_stack.aclose)
        async with SpCollector(broker) as col, \
                running_agent(broker, tmp_path, [press(port)]):
            await async_wait_until(lambda: col.of("DDATA", DEVICE), 30, "data")
            await sim_stack.aclose()  # the device goes away
            await async_wait_until(lambda: col.of("DDEATH", DEVICE), 30, "DDEATH")
            ddeath = col.of("DDEATH", DEVICE)[0]
            assert (ddeath.qos, ddeath.retain) == (0, False)
            assert ddeath.payload.HasField("seq") and not ddeath.payload.metrics
            sim_stack = contextlib.AsyncExitStack()
            stack.push_async_callback(sim_stack.aclose)
            await start_sim(sim_stack, port=port)
            await async_wait_until(lambda: len(col.of("DBIRTH", DEVICE)) >= 2, 30, "DBIRTH again")
            # No data of a dead device between its DDEATH and the new DBIRTH.
            order = [m.kind for m in col.messages if m.device == DEVICE]
            dead = order.index("DDEATH")
            assert order[dead + 1] == "DBIRTH", order
            assert len(col.of("NBIRTH")) == 1, "the node session was not disturbed"


async def test_device_added_by_config_gets_dbirth_without_disturbing_others(
    broker: Broker, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sim = await start_sim(stack)
        sim2 = await start_sim(stack)
        async with SpCollector(broker) as col, \
                running_agent(broker, tmp_path, [press(sim.port)]) as run:
            await async_wait_until(lambda: col.of("DDATA", DEVICE), 30, "data")
            two = yaml.safe_dump(site_dict(broker.url, [press(sim.port), press(sim2.port, "press-2")]))
            await run.agent.apply_site(parse_site(two))
            await async_wait_until(lambda: col.of("DDATA", "press-2"), 30, "the new device's data")
            assert len(col.of("DBIRTH", "press-2")) == 1
            assert len(col.of("DBIRTH", DEVICE)) == 1 and not col.of("DDEATH", DEVICE)
            assert len(col.of("NBIRTH")) == 1
            aliases = {m.alias for msg in col.of("DBIRTH") for m in msg.payload.metrics}
            assert len(aliases) == 10, "aliases are unique across the node"
            # A changed tag list: DDEATH then a new DBIRTH with the new tag.
            extra = [{"name": "spare", "address": "HR201", "type": "uint16"}]
            changed = yaml.safe_dump(site_dict(broker.url, [press(sim.port, extra_tags=extra),
                                                            press(sim2.port, "press-2")]))
            await run.agent.apply_site(parse_site(changed))
            await async_wait_until(lambda: len(col.of("DBIRTH", DEVICE)) == 2, 30, "rebirth")
            names = {m.name for m in col.of("DBIRTH", DEVICE)[1].payload.metrics}
            assert "spare" in names
            kinds = [m.kind for m in col.messages if m.device == DEVICE]
            assert kinds[kinds.index("DBIRTH", 1) - 1] == "DDEATH"
            assert len(col.of("DBIRTH", "press-2")) == 1, "the other device was left alone"
            # A removed device: DDEATH.
            one = yaml.safe_dump(site_dict(broker.url, [press(sim.port, extra_tags=extra)]))
            await run.agent.apply_site(parse_site(one))
            await async_wait_until(lambda: col.of("DDEATH", "press-2"), 30, "DDEATH of the removed")
