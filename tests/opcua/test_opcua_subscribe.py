# asyncua annotates its constructors with NewTypes (ua.Int16, ua.String, ...) and
# re-exports without __all__; plain ints/strs are what it takes at run time.
# mypy: disable-error-code="arg-type, attr-defined, method-assign, call-overload"
"""Subscribe mode against a real asyncua server: timestamps, quality, deadband."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua

from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.simulator import SimServer, start_server
from tests.opcua.conftest import Streamer

pytestmark = pytest.mark.asyncio(loop_scope="module")
NS = "urn:edge-agent:demo"
VT = ua.VariantType


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim() -> AsyncIterator[SimServer]:
    server = await start_server(variables={
        "A": (VT.Double, 0.0), "B": (VT.Int32, 0), "C": (VT.Double, 0.0), "D": (VT.Double, 0.0),
    })
    yield server
    await server.stop()


def tags(*names: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": n.lower(), "node": f"nsu={NS};s={n}", **extra} for n in names]


async def test_changes_sharing_a_source_timestamp_form_one_sample(
    sim: SimServer, context: Any, make_device: Any, wait: Any
) -> None:
    ghost = {"name": "ghost", "node": f"nsu={NS};s=Ghost"}
    cfg = make_device(sim.endpoint, [*tags("A", "B"), ghost], mode="subscribe", interval="50ms")
    async with Streamer(OpcuaDriver(cfg, context)) as st:
        assert st.driver.push
        await wait(lambda: st.latest("a") == 0.0 and st.latest("b") == 0, what="initial values")
        failed = [s for s in st.samples if "ghost" in s.bad]
        assert failed and failed[0].bad["ghost"] == "BadNodeIdUnknown"
        stamp = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        await sim.set("A", 1.5, VT.Double, ts=stamp)
        await sim.set("B", 7, VT.Int32, ts=stamp)
        want = int(stamp.timestamp() * 1000)
        await wait(lambda: any(s.ts == want and len(s.values) == 2 for s in st.samples),
                   what="one sample with both changes")
        sample = next(s for s in st.samples if s.ts == want)
        assert sample.values == {"a": 1.5, "b": 7} and not sample.bad and not sample.uncertain


async def test_status_codes_become_bad_and_uncertain(
    sim: SimServer, context: Any, make_device: Any, wait: Any
) -> None:
    cfg = make_device(sim.endpoint, tags("C"), mode="subscribe", interval="50ms")
    async with Streamer(OpcuaDriver(cfg, context)) as st:
        await sim.set("C", 3.0, VT.Double, status=ua.StatusCodes.BadSensorFailure)
        await wait(lambda: any(s.bad.get("c") == "BadSensorFailure" for s in st.samples),
                   what="bad sample")
        assert [s.values for s in st.samples if s.bad] == [{"c": None}]
        await sim.set("C", 4.0, VT.Double, status=ua.StatusCodes.UncertainSensorNotAccurate)
        await wait(lambda: any(s.uncertain for s in st.samples), what="uncertain sample")
        sample = next(s for s in st.samples if s.uncertain)
        assert sample.values == {"c": 4.0}
        assert sample.uncertain == {"c": "UncertainSensorNotAccurate"}
        await sim.set("C", 0.0, VT.Double)


async def test_absolute_deadband_suppresses_small_changes(
    sim: SimServer, context: Any, make_device: Any, wait: Any
) -> None:
    cfg = make_device(sim.endpoint, tags("D", deadband=5.0), mode="subscribe", interval="50ms")
    async with Streamer(OpcuaDriver(cfg, context)) as st:
        await wait(lambda: st.latest("d") == 0.0, what="initial value")
        for value in (1.0, 2.0, 10.0):
            await sim.set("D", value, VT.Double)
        await wait(lambda: st.latest("d") == 10.0, what="the large change")
        seen = [s.values["d"] for s in st.samples]
        assert seen == [0.0, 10.0]
    await sim.set("D", 0.0, VT.Double)


async def test_read_works_while_subscribed(
    sim: SimServer, context: Any, make_device: Any, wait: Any
) -> None:
    # The core's remote `read` calls read() on a push driver.
    cfg = make_device(sim.endpoint, tags("A", "B"), mode="subscribe", interval="50ms")
    async with Streamer(OpcuaDriver(cfg, context)) as st:
        await sim.set("B", 42, VT.Int32)
        assert (await st.driver.read(["b"])).values == {"b": 42}


async def test_monitored_items_are_created_within_a_stricter_real_limit(
    sim: SimServer, context: Any, make_device: Any, wait: Any
) -> None:
    from asyncua.common.utils import ServiceError

    service = sim.server.iserver.subscription_service
    original = service.create_monitored_items
    sizes: list[int] = []

    async def strict(params: Any, *args: Any) -> Any:  # a server that under-reports its limit
        sizes.append(len(params.ItemsToCreate))
        if len(params.ItemsToCreate) > 1:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)
        return await original(params, *args)

    service.create_monitored_items = strict
    cfg = make_device(sim.endpoint, tags("A", "B", "C"), mode="subscribe", interval="50ms")
    try:
        async with Streamer(OpcuaDriver(cfg, context)) as st:
            await wait(lambda: {"a", "b", "c"} <= {k for s in st.samples for k in s.values},
                       what="all three items")
    finally:
        service.create_monitored_items = original
    assert sizes == [3, 1, 1, 1]
