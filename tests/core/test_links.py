"""Shared links: one owner object per link, refcounted; the legacy ``context.shared`` still shared."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from agent.pipeline.scheduler import Scheduler
from agent.sdk import LinkConflict, SharedLinks
from agent.sdk.driver import DeviceConfig, Driver, DriverContext, DriverPlugin, TagConfig
from agent.sdk.readings import Sample, now_ms


class Port:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False


def test_one_link_per_key_and_the_last_owner_gets_it_back() -> None:
    links = SharedLinks()
    made: list[Port] = []

    def open_port() -> Port:
        made.append(Port("/dev/ttyUSB0"))
        return made[-1]

    a = links.acquire("/dev/ttyUSB0", owner="press-1", kind=Port, factory=open_port)
    b = links.acquire("/dev/ttyUSB0", owner="press-2", kind=Port, factory=open_port)
    again = links.acquire("/dev/ttyUSB0", owner="press-2", kind=Port, factory=open_port)
    assert a is b is again and len(made) == 1
    assert links.owners("/dev/ttyUSB0") == ["press-1", "press-2"]
    assert links.release("/dev/ttyUSB0", "press-1") is None, "press-2 still uses it"
    assert links.release("/dev/ttyUSB0", "nobody") is None
    assert links.release("/dev/ttyUSB0", "press-2") is a, "the last one out closes it"
    assert len(links) == 0
    assert links.release("/dev/ttyUSB0", "press-2") is None  # a close after a failed connect
    links.acquire("k", owner="x", kind=Port, factory=lambda: Port("k"))
    with pytest.raises(LinkConflict, match="is a Port, not a str"):
        links.acquire("k", owner="y", kind=str, factory=lambda: "k")


class Legacy(Driver):
    """A third-party driver written against the first interface: keys its own dict."""

    seen: ClassVar[list[dict[str, object]]] = []

    async def connect(self) -> None:
        self.context.shared.setdefault("bus", object())
        Legacy.seen.append(self.context.shared)

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        return Sample(ts=now_ms(), values={"x": 1})

    async def close(self) -> None:
        pass


async def test_context_shared_still_works_for_old_drivers(tmp_path: Path) -> None:
    plugin = DriverPlugin(name="legacy", config_model=DeviceConfig, factory=Legacy)
    sched = Scheduler(plugins={"legacy": plugin}, state_dir=tmp_path, sink=lambda d, s: None)
    await sched.apply([DeviceConfig(name=f"d{i}", driver="legacy", poll=0.1,
                                    tags=[TagConfig(name="x")]) for i in range(2)])
    try:
        from tests.conftest import async_wait_until

        await async_wait_until(lambda: len(Legacy.seen) >= 2, 30, "both connected")
        assert Legacy.seen[0] is Legacy.seen[1], "one dict for every device of the driver"
        assert isinstance(sched.runners["d0"].driver.context, DriverContext)
    finally:
        await sched.stop_all()
