"""Alarms: hysteresis, ``for``, bad readings, status; events through the buffer and a broker outage."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import yaml

from agent.config.load import parse_site
from agent.pipeline.encoders.json import pack_batches, split_events
from agent.pipeline.processing import DeviceChain, Processing
from agent.runtime.agent import Agent
from agent.runtime.status import collect
from agent.sdk.readings import Sample
from drivers.modbus.simserver import SimServer
from tests.analytics.helpers_analytics import TAGS, rig, set_floats
from tests.conftest import Broker, Collector, async_wait_until

HOT = {"name": "oil_hot", "tag": "a", "above": 90, "clear_below": 85, "for": "10s",
       "severity": "high"}
COLD = {"name": "oil_cold", "tag": "a", "below": 5, "clear_above": 7}


def states(samples: list[Sample]) -> list[tuple[int, str, str, Any, float]]:
    return [(e["ts"], e["alarm"], e["state"], e["value"], e["limit"])
            for s in samples for e in s.events]


async def test_hysteresis_and_delay(server: SimServer) -> None:
    steps = [  # (seconds, value of a)
        (0, 80.0), (1, 95.0), (5, 96.0), (8, 80.0),  # above for 7 s only: not raised
        (9, 91.0), (15, 92.0), (19, 93.0),  # above since 9: raised at 19
        (20, 88.0), (21, 86.0),  # between clear and limit: stays active
        (22, 84.0),  # below clear_below: cleared
        (23, 4.0), (24, 6.0), (25, 7.5),  # cold alarm: immediate, clears only above 7
    ]
    base = 1_800_000_000_000
    async with rig(server, alarms=[HOT, COLD]) as r:
        out: list[Sample] = []
        for second, value in steps:
            set_floats(server, a=value)
            out += await r.run(base + second * 1000)
            if second == 21:
                [active] = active_in(r.chain)
                assert active["alarm"] == "oil_hot" and active["since"] == base + 19_000
    assert states(out) == [
        (base + 19_000, "oil_hot", "active", 93.0, 90.0),
        (base + 22_000, "oil_hot", "cleared", 84.0, 85.0),
        (base + 23_000, "oil_cold", "active", 4.0, 5.0),
        (base + 25_000, "oil_cold", "cleared", 7.5, 7.0),
    ]
    event = next(e for s in out for e in s.events)
    assert event == {"ts": base + 19_000, "alarm": "oil_hot", "tag": "a", "state": "active",
                     "value": 93.0, "limit": 90.0, "severity": "high"}


def active_in(chain: DeviceChain) -> list[dict[str, Any]]:
    """What the stage reports for one device (``Processing.active_alarms``)."""
    stage = Processing()
    stage._chains = {"dev": chain}
    return stage.active_alarms().get("dev", [])


async def test_bad_reading_neither_raises_nor_clears_and_says_unknown_once(
        server: SimServer) -> None:
    alarm = {"name": "hot", "tag": "a", "above": 90}
    base = 1_800_000_000_000
    async with rig(server, alarms=[alarm]) as r:
        set_floats(server, a=95.0)
        out = await r.run(base)
        for n in (1, 2, 3):  # the device goes bad: every tag null with an error
            sample = await r.read(base + n * 1000)
            out += r.chain.process([Sample.all_bad(list(sample.values), "timeout", sample.ts)])
        assert active_in(r.chain), "a bad reading does not clear"
        set_floats(server, a=10.0)
        out += await r.run(base + 4000)
    assert states(out) == [
        (base, "hot", "active", 95.0, 90.0),
        (base + 1000, "hot", "unknown", None, 90.0),
        (base + 4000, "hot", "cleared", 10.0, 90.0),
    ]


async def test_alarm_on_a_computed_tag_and_on_an_aggregate(server: SimServer) -> None:
    base = 1_800_000_000_000
    options: dict[str, Any] = {
        "computed": [{"name": "power", "expr": "a * b"}],
        "aggregate": [{"every": "10s", "tags": ["power"], "stats": ["mean"]}],
        "alarms": [{"name": "overload", "tag": "power", "above": 100},
                   {"name": "avg_overload", "tag": "power.mean", "above": 50}],
    }
    async with rig(server, **options) as r:
        set_floats(server, a=20.0, b=6.0)
        out = await r.run(base)
        set_floats(server, b=1.0)
        out += await r.run(base + 10_000)
    assert states(out) == [(base, "overload", "active", 120.0, 100.0),
                           (base + 10_000, "avg_overload", "active", 120.0, 50.0),
                           (base + 10_000, "overload", "cleared", 20.0, 100.0)]


def test_events_go_to_the_message_level_and_respect_max_message() -> None:
    event = {"ts": 5, "alarm": "hot", "tag": "t", "state": "active", "value": 1.5, "limit": 1.0,
             "severity": "high"}
    samples = [Sample(ts=i, values={"t": float(i), "events": [i]}) for i in range(300)]
    samples[7].events = (event,)
    batches = pack_batches(samples, 2048)
    assert len(batches) > 2
    messages = [json.loads(b'{"samples":' + body + b"}") for body, _ in batches]
    with_events = [m for m in messages if "events" in m]
    assert len(with_events) == 1 and with_events[0]["events"] == [event]
    assert any(s["ts"] == 7 for s in with_events[0]["samples"])
    assert all(len(body) <= 2048 for body, _ in batches)
    assert sum(len(m["samples"]) for m in messages) == 300
    body = next(b for b, _ in batches if b"hot" in b)
    array, events = split_events(body)
    assert events is not None and json.loads(events) == [event]
    assert len(json.loads(array)) == batches[[b for b, _ in batches].index(body)][1]


def site_text(url: str, port: int) -> str:
    return yaml.safe_dump({
        "gateway": {"id": "gw-alarm", "site": "lab"},
        "uplink": {"mqtt": {"url": url, "reconnect_max": "1s"}},
        "buffer": {"commit_interval": "100ms"},
        "devices": [{
            "name": "press", "driver": "modbus", "poll": "200ms",
            "connection": {"transport": "tcp", "host": "127.0.0.1", "port": port,
                           "timeout": "500ms"},
            "tags": TAGS[:2],
            "alarms": [{"name": "oil_hot", "tag": "a", "above": 90, "clear_below": 85,
                        "severity": "critical"}],
        }],
    })


async def test_alarm_raised_during_a_broker_outage_is_delivered_after_it(
        server: SimServer, broker: Broker, tmp_path: Path) -> None:
    set_floats(server, a=20.0, b=1.0)
    agent = Agent(parse_site(site_text(broker.url, server.port), "site.yaml"), tmp_path / "st")
    async with Collector(broker, "m2m/lab/gw-alarm/data/#") as col:
        task = asyncio.create_task(agent.run())
        try:
            await async_wait_until(lambda: col.json_payloads(), 30, "data before the outage")
            broker.stop()
            await async_wait_until(lambda: not agent.uplink.counters.connected, 30, "link down")
            set_floats(server, a=120.0)
            await async_wait_until(lambda: agent.processing.active_alarms(), 30, "alarm active")
            [active] = agent.processing.active_alarms()["press"]
            raised_at = active["since"]
            assert collect(agent)["alarms"] == {"press": [active]}, "status lists it"
            set_floats(server, a=50.0)  # cleared before the link returns
            await async_wait_until(lambda: not agent.processing.active_alarms(), 30, "cleared")
            broker.start()

            def events() -> list[dict[str, Any]]:
                return [e for p in col.json_payloads() for e in p.get("events", [])]

            await async_wait_until(lambda: len(events()) >= 2, 60, "events after the outage")
        finally:
            agent.stop()
            await asyncio.wait_for(task, 30)
    first, second = events()[:2]
    assert first["state"] == "active" and first["ts"] == raised_at, "its true time"
    assert first["value"] == 120.0 and first["limit"] == 90.0 and first["severity"] == "critical"
    assert second["state"] == "cleared" and second["ts"] > raised_at
    # The events rode in the data message of the sample they happened at.
    message = next(p for p in col.json_payloads() if p.get("events"))
    assert set(message) == {"gateway", "device", "seq", "samples", "events"}
    assert any(s["ts"] == raised_at for s in message["samples"])


def test_readme_example_is_a_valid_device() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Edge analytics"):]
    block = section[section.index("```yaml") + 7:section.index("```", section.index("```yaml") + 7)]
    device = {"name": "press", "driver": "modbus",
              "connection": {"transport": "tcp", "host": "127.0.0.1", "port": 502},
              **yaml.safe_load(textwrap.dedent(block))}
    text = yaml.safe_dump({"gateway": {"id": "g", "site": "s"},
                           "uplink": {"mqtt": {"url": "mqtt://127.0.0.1"}}, "devices": [device]})
    [parsed] = parse_site(text, "site.yaml").devices
    assert [a.name for a in parsed.alarms] == ["oil_hot", "oil_cold"]
    assert parsed.aggregate[0].raw is False


async def test_delay_survives_the_clock_going_back(server: SimServer) -> None:
    alarm = {"name": "hot", "tag": "a", "above": 90, "for": "5s"}
    base = 1_800_000_000_000
    async with rig(server, alarms=[alarm]) as r:
        set_floats(server, a=95.0)
        out = await r.run(base)
        out += await r.run(base - 3_600_000)  # an NTP step back by an hour
        out += await r.run(base - 3_600_000 + 4000)
        assert not states(out), "not yet past the limit for 5 s on the new clock"
        out += await r.run(base - 3_600_000 + 5000)
    assert states(out) == [(base - 3_595_000, "hot", "active", 95.0, 90.0)]


async def test_events_go_out_under_report_by_exception(server: SimServer) -> None:
    # report: change sends nothing for a value that stands still, but an
    # alarm raised on such a poll (its `for` ran out) must still be sent.
    base = 1_800_000_000_000
    async with rig(server, alarms=[{**COLD, "for": "1s"}], report="change") as r:
        set_floats(server, a=50.0)
        first = await r.run(base)
        assert first and first[0].values, "first poll: every tag once"
        assert await r.run(base + 1000) == [], "nothing moved: nothing sent"
        set_floats(server, a=4.0)
        moved = await r.run(base + 2000)
        raised = await r.run(base + 3000)
    assert moved and states(moved) == [], "below the limit, not yet for 1 s"
    assert states(raised) == [(base + 3000, "oil_cold", "active", 4.0, 5.0)]
    assert all("a" not in s.values for s in raised), "the value itself did not change"
