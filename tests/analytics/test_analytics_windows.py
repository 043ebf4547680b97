"""Aggregate windows against hand-computed stats; readings come from a real Modbus server.

The server's values are set by the test; only the samples' timestamps are
chosen by the test (windows follow sample time, and the tests must not wait
for the wall clock to pass a minute).
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from agent.pipeline.processing import Processing
from agent.sdk.readings import Sample, now_ms
from drivers.modbus.simserver import SimServer
from tests.analytics.helpers_analytics import HOLE, TAGS, rig, set_floats, set_ints

MINUTE = 60_000
ALL_STATS = ["min", "max", "mean", "last", "count", "sum", "stddev"]


def future_window() -> int:
    """The start of a whole minute that has not begun yet (so not a partial window)."""
    return (now_ms() // MINUTE + 2) * MINUTE


async def test_one_minute_window_matches_hand_computed_stats(server: SimServer) -> None:
    a_values = [1.5, 4.0, -2.0, 10.25]
    j_values = [3, 7, 7, -1]
    base = future_window()
    offsets = [0, 15_000, 30_000, 59_999]
    window = {"every": "1m", "tags": ["a", "j", "hole"], "stats": ALL_STATS}
    async with rig(server, [*TAGS, HOLE], aggregate=[window]) as r:
        out: list[Sample] = []
        for a, j, dt in zip(a_values, j_values, offsets, strict=True):
            set_floats(server, a=a)
            set_ints(server, j=j)
            out += await r.run(base + dt)
        assert len(out) == 4, "no aggregate before the window ends"
        set_floats(server, a=99.0)
        out += await r.run(base + MINUTE + 500)
    raw, agg, after = out[:4], out[4], out[5]
    assert [s.values["a"] for s in raw] == a_values, "raw readings still go out (raw: true)"
    assert agg.ts == base + MINUTE, "stamped with the window's end"
    assert after.values["a"] == 99.0 and "a.mean" not in after.values
    v = agg.values
    assert v["a.min"] == -2.0 and v["a.max"] == 10.25 and v["a.last"] == 10.25
    assert v["a.count"] == 4 and v["a.sum"] == pytest.approx(sum(a_values))
    assert v["a.mean"] == pytest.approx(statistics.fmean(a_values))
    assert v["a.stddev"] == pytest.approx(statistics.pstdev(a_values))
    assert v["j.min"] == -1 and v["j.max"] == 7 and v["j.count"] == 4
    assert v["j.mean"] == pytest.approx(4.0) and v["j.stddev"] == pytest.approx(
        statistics.pstdev(j_values))
    # The tag that never read well: count 0, everything else bad "no data".
    assert v["hole.count"] == 0
    assert {k: agg.bad[k] for k in agg.bad} == {
        f"hole.{s}": "no data" for s in ALL_STATS if s != "count"}
    assert not agg.uncertain


async def test_stddev_is_exact_for_large_values_with_small_spread(server: SimServer) -> None:
    values = [1_000_000.1, 1_000_000.2, 1_000_000.3]
    base = future_window()
    async with rig(server, aggregate=[{"every": "1m", "tags": ["a"], "stats": ["stddev"]}]) as r:
        out: list[Sample] = []
        for n, value in enumerate(values):
            set_floats(server, a=value)
            out += await r.run(base + n * 1000)
        out += await r.run(base + MINUTE)
    read = [s.values["a"] for s in out[:3]]  # float32 on the wire
    assert out[3].values["a.stddev"] == pytest.approx(statistics.pstdev(read), rel=1e-6)


async def test_first_window_after_a_restart_is_partial(server: SimServer) -> None:
    set_floats(server, a=5.0)
    window = {"every": "1m", "tags": ["a"], "stats": ["mean", "count"]}
    started = now_ms()
    async with rig(server, aggregate=[window]) as r:
        if now_ms() // MINUTE != started // MINUTE:  # built on a minute boundary: again
            r.chain = type(r.chain)(r.config)
            started = now_ms()
        current = started // MINUTE * MINUTE
        out = await r.run(started)
        out += await r.run(current + MINUTE + 1)
        out += await r.run(current + 2 * MINUTE + 1)
    first, second = out[1], out[3]
    assert first.ts == current + MINUTE and second.ts == current + 2 * MINUTE
    assert first.uncertain == {"a.mean": "partial window", "a.count": "partial window"}
    assert first.values == {"a.mean": 5.0, "a.count": 1}
    assert not second.uncertain and second.values["a.count"] == 1


async def test_raw_false_sends_only_the_aggregates(server: SimServer) -> None:
    set_floats(server, a=80.0, b=1.0)
    base = future_window()
    options: dict[str, Any] = {
        "aggregate": [{"every": "10s", "tags": ["a"], "stats": ["max"], "raw": False}],
        # The alarm still sees every raw reading of a.
        "alarms": [{"name": "a_high", "tag": "a", "above": 90}],
    }
    async with rig(server, **options) as r:
        out = await r.run(base)
        set_floats(server, a=95.0)
        out += await r.run(base + 2000)
        set_floats(server, a=70.0)
        out += await r.run(base + 10_000)
    assert [s.ts for s in out] == [base, base + 2000, base + 10_000, base + 10_000]
    assert all("a" not in s.values and "a" not in s.bad for s in out)
    assert [s.values.get("b") for s in out] == [1.0, 1.0, None, 1.0]
    assert out[2].values == {"a.max": 95.0}
    [event] = out[1].events
    assert event["state"] == "active" and event["value"] == 95.0


async def test_two_windows_close_on_their_own_grids(server: SimServer) -> None:
    set_floats(server, a=2.0)
    base = future_window()
    windows = [{"every": "10s", "tags": ["a"], "stats": ["count"]},
               {"every": "1m", "tags": ["b"], "stats": ["count"]}]
    async with rig(server, aggregate=windows) as r:
        out: list[Sample] = []
        for t in range(0, 61_000, 5000):
            out += await r.run(base + t)
    aggregates = [(s.ts - base, s.values) for s in out if "a" not in s.values]
    assert aggregates == [(t, {"a.count": 2}) for t in range(10_000, 60_000, 10_000)] + [
        (60_000, {"a.count": 2}), (60_000, {"b.count": 12})]


async def test_uncertain_readings_and_a_clock_jumping_back(server: SimServer) -> None:
    set_floats(server, a=1.0, b=2.0)
    base = future_window()
    window = {"every": "1m", "tags": ["a", "b"], "stats": ["count"]}
    async with rig(server, aggregate=[window]) as r:
        doubtful = await r.read(base)
        doubtful.uncertain["a"] = "sensor drift"
        out = r.chain.process([doubtful])
        out += await r.run(base + MINUTE)  # closes the first window
        out += await r.run(base + 10)  # a late timestamp of the window just sent
        out += await r.run(base - 60 * MINUTE)  # the clock went back an hour
        out += await r.run(base - 59 * MINUTE)
    aggregates = [s for s in out if "a" not in s.values]
    assert [(s.ts - base, s.values, s.uncertain) for s in aggregates] == [
        (MINUTE, {"a.count": 1, "b.count": 1}, {"a.count": "uncertain readings"}),
        # The window open when the clock jumped is sent as it was...
        (2 * MINUTE, {"a.count": 1, "b.count": 1}, {}),
        # ...and the first one on the new clock is partial.
        (-59 * MINUTE, {"a.count": 1, "b.count": 1},
         {"a.count": "partial window", "b.count": "partial window"}),
    ]
    assert len(out) == 5 + 3, "every raw sample passes, also the late one"


async def test_a_quiet_device_s_window_is_closed_by_the_clock(server: SimServer) -> None:
    set_floats(server, a=95.0)
    base = future_window()
    options: dict[str, Any] = {
        "poll": "1s",
        "aggregate": [{"every": "1m", "tags": ["a"], "stats": ["max", "count"], "raw": False}],
        "alarms": [{"name": "hot_minute", "tag": "a.max", "above": 90}],
    }
    async with rig(server, TAGS[:1], **options) as r:
        stage = Processing()
        stage.apply([r.config])
        out = stage("dev", [await r.read(base + 5000)])  # then the device falls silent
        assert stage.tick(base + MINUTE + 1000) == {}, "a poll period of grace for the next sample"
        [closed] = stage.tick(base + MINUTE + 2000)["dev"]
        assert stage.tick(base + MINUTE + 3000) == {}, "closed once"
        out += stage("dev", [await r.read(base + 30_000)])  # a late source timestamp
        out += stage("dev", [await r.read(base + MINUTE + 4000)])
        [again] = stage.tick(base + 2 * MINUTE + 2000)["dev"]
    assert closed.ts == base + MINUTE and closed.values == {"a.max": 95.0, "a.count": 1}
    [event] = closed.events
    assert event["alarm"] == "hot_minute" and event["ts"] == base + MINUTE, "later steps ran"
    assert out == [], "raw: false, and the late sample counted nowhere"
    assert again.ts == base + 2 * MINUTE and again.values["a.count"] == 1
