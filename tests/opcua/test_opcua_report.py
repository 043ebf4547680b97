"""OPC UA subscribe mode with report by exception, against a real asyncua server.

The deadband goes to the server as a DataChangeFilter; a server that
refuses it gets the item without one, and the agent's stage filters instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from agent.pipeline.processing import Processing
from agent.sdk.readings import Sample
from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.plugin import PLUGIN
from drivers.opcua.simulator import SimServer, start_server
from tests.opcua.conftest import NS, Streamer

pytestmark = pytest.mark.asyncio(loop_scope="module")
VT = ua.VariantType
Create = Callable[..., Awaitable[list[ua.MonitoredItemCreateResult]]]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sim() -> AsyncIterator[SimServer]:
    server = await start_server(variables={"P": (VT.Double, 0.0), "Q": (VT.Double, 0.0)})
    yield server
    await server.stop()


class Staged(Streamer):
    """A Streamer that also keeps what the processing stage passes."""

    def __init__(self, driver: OpcuaDriver) -> None:
        super().__init__(driver)
        self.staged: list[Sample] = []
        self.processing = Processing()
        self.processing.apply([driver.cfg])

    def emit(self, samples: list[Sample]) -> None:
        self.samples.extend(samples)
        self.staged.extend(self.processing(self.driver.cfg.name, samples))


@contextlib.contextmanager
def server_items(sim: SimServer, refuse: bool,
                 seen: list[ua.MonitoredItemCreateRequest]) -> Any:
    """Record the items the server is asked for; optionally refuse every filter."""
    service = sim.server.iserver.subscription_service
    original: Create = service.create_monitored_items

    async def create(params: Any, *args: Any) -> list[ua.MonitoredItemCreateResult]:
        seen.extend(params.ItemsToCreate)
        results = []
        for item in params.ItemsToCreate:
            # (the server decodes its own DataChangeFilter class, not ua.DataChangeFilter)
            if refuse and hasattr(item.RequestedParameters.Filter, "DeadbandType"):
                res = ua.MonitoredItemCreateResult()
                res.StatusCode = ua.StatusCode(StatusCodes.BadFilterNotAllowed)  # type: ignore[arg-type]
                results.append(res)
                continue
            one = ua.CreateMonitoredItemsParameters()
            one.SubscriptionId = params.SubscriptionId
            one.TimestampsToReturn = params.TimestampsToReturn
            one.ItemsToCreate = [item]
            results.extend(await original(one, *args))
        return results

    service.create_monitored_items = create  # type: ignore[method-assign]
    try:
        yield
    finally:
        service.create_monitored_items = original  # type: ignore[method-assign,assignment]


def tag(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name.lower(), "node": f"nsu={NS};s={name}", **extra}


async def test_deadband_goes_to_the_server_as_a_filter(
    sim: SimServer, context: Any, make_device: Any, wait: Any
) -> None:
    seen: list[ua.MonitoredItemCreateRequest] = []
    cfg = make_device(sim.endpoint, [tag("P", deadband="2%"), tag("Q")], mode="subscribe",
                      interval="50ms", deadband=0.5)
    with server_items(sim, refuse=False, seen=seen):
        async with Staged(OpcuaDriver(cfg, context)) as st:
            await wait(lambda: st.latest("q") == 0.0, what="initial values")
    filters = {item.RequestedParameters.ClientHandle: item.RequestedParameters.Filter
               for item in seen}
    assert (filters[0].DeadbandType, filters[0].DeadbandValue) == (2, 2.0)  # percent
    assert (filters[1].DeadbandType, filters[1].DeadbandValue) == (1, 0.5)  # the device's


async def test_a_refused_filter_falls_back_to_the_local_stage(
    sim: SimServer, context: Any, make_device: Any, wait: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    seen: list[ua.MonitoredItemCreateRequest] = []
    cfg = make_device(sim.endpoint, [tag("P", deadband=5.0), tag("Q")], mode="subscribe",
                      interval="50ms", report="change")
    driver = OpcuaDriver(cfg, context)
    with server_items(sim, refuse=True, seen=seen):
        async with Staged(driver) as st:
            await wait(lambda: st.latest("p") == 0.0, what="the item made without a filter")
            for value in (1.0, 2.0, 10.0):
                await sim.set("P", value, VT.Double)
                await wait(lambda v=value: st.latest("p") == v, what=f"{value} from the server")
            await sim.set("Q", 1.0, VT.Double)  # quality and other tags unaffected
            await wait(lambda: st.latest("q") == 1.0, what="q")
    await sim.set("P", 0.0, VT.Double)
    await sim.set("Q", 0.0, VT.Double)
    assert not any(s.bad for s in st.samples), "the tag is not bad for want of a filter"
    # The server sent every change; the stage kept only those past the deadband.
    raw = [s.values["p"] for s in st.samples if "p" in s.values]
    staged = [s.values["p"] for s in st.staged if "p" in s.values]
    assert raw == [0.0, 1.0, 2.0, 10.0]
    assert staged == [0.0, 10.0]
    refused = [r for r in caplog.records if "refused the deadband filter" in r.getMessage()]
    assert len(refused) == 1
    assert "BadFilterNotAllowed" in refused[0].getMessage()
    assert "p" in refused[0].getMessage()
    assert context.counters.driver["deadband_filters_refused"] == 1


async def test_check_notes_report_change_on_a_subscription(make_device: Any) -> None:
    sub = make_device("opc.tcp://127.0.0.1:4840", [tag("P")], report="change", name="sub")
    polled = make_device("opc.tcp://127.0.0.1:4841", [tag("P")], report="change",
                         mode="poll", name="polled")
    assert PLUGIN.check is not None
    notes = [w for w in PLUGIN.check([sub, polled]) if w.startswith("note:")]
    assert len(notes) == 1 and "device sub" in notes[0] and "heartbeat" in notes[0]


async def test_quality_changes_go_out_even_inside_the_deadband(
    sim: SimServer, context: Any, make_device: Any, wait: Any
) -> None:
    cfg = make_device(sim.endpoint, [tag("Q")], mode="subscribe", interval="50ms",
                      report="change", deadband=100)
    # asyncua's server applies a deadband to status changes too (the spec says
    # a StatusValue trigger reports them): it refuses the filter here, so the
    # agent's own stage is what is tested.
    seen: list[ua.MonitoredItemCreateRequest] = []
    with server_items(sim, refuse=True, seen=seen):
        st = Staged(OpcuaDriver(cfg, context))
        await quality_round(sim, st, wait)
    staged = [(s.values["q"], s.uncertain.get("q")) for s in st.staged if "q" in s.values]
    assert staged == [(0.0, None), (0.0, "UncertainLastUsableValue"), (1.0, None)]


async def quality_round(sim: SimServer, st: Staged, wait: Any) -> None:
    async with st:
        await wait(lambda: st.latest("q") == 0.0, what="the initial value")
        await sim.set("Q", 0.0, VT.Double, status=StatusCodes.UncertainLastUsableValue)
        await wait(lambda: any(s.uncertain for s in st.samples), what="the uncertain value")
        await sim.set("Q", 1.0, VT.Double)  # good again, and inside the deadband
        await wait(lambda: st.latest("q") == 1.0, what="good again")
    await sim.set("Q", 0.0, VT.Double)
