"""A sample's ts is when its scan's first request went out, not when it queued for a shared bus."""

from __future__ import annotations

import asyncio

from agent.sdk.links import SharedLinks
from agent.sdk.readings import now_ms
from drivers.modbus.simserver import SimServer
from tests.modbus.helpers_modbus import device, make_driver


async def test_ts_is_taken_when_the_first_request_goes_out(server: SimServer) -> None:
    links = SharedLinks()
    tags = [{"name": "a", "address": "HR0", "type": "uint16"}]
    first = make_driver(device(server.port, tags, name="first"), links)
    second = make_driver(device(server.port, tags, name="second"), links)
    await first.connect()
    await second.connect()
    try:
        bus = first.bus
        assert bus is second.bus  # one link, one request at a time
        async with bus._lock:  # another device's long request holds the bus
            read = asyncio.create_task(second.read())
            await asyncio.sleep(0.3)
            assert not read.done()
            released = now_ms()
        sample = await asyncio.wait_for(read, 20)
        assert set(sample.values) == {"a"} and not sample.bad
        # Before, ts was the start of the scan: >= 300 ms before the release.
        assert sample.ts >= released, (sample.ts, released)
        # A scan that never waits still stamps its own read.
        before = now_ms()
        again = await first.read()
        assert before <= again.ts <= now_ms()
    finally:
        await first.close()
        await second.close()
