"""A list of broker URLs (Mosquitto), reconnect spread, and the AWS profile's pacing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.config.model import MqttConfig
from agent.pipeline.pacing import Pacer
from agent.pipeline.uplink import Uplink
from agent.sdk.backoff import Backoff
from agent.sdk.readings import Sample
from tests.brokers.helpers import BASE, GATEWAY, Stream, data, state, states
from tests.conftest import Broker, Collector, async_wait_until, free_port


async def test_first_url_dead_second_answers_and_state_names_it(broker: Broker,
                                                               tmp_path: Path) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    stream = Stream(tmp_path, MqttConfig(url=[dead, broker.url], reconnect_max=1.0))
    async with Collector(broker, f"{BASE}/#", "col-list") as col, stream.running():
        await async_wait_until(lambda: stream.uplink.connected.is_set(), 30, "the second broker")
        await async_wait_until(lambda: states(col), 30, "the state")
        assert states(col)[-1]["broker"] == broker.url
        assert stream.uplink.counters.errors == 1, "the dead node is tried once, then the next"
        await stream.finish(col)


async def test_failover_between_two_mosquittos_loses_nothing(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a, b = Broker(tmp_path / "a"), Broker(tmp_path / "b")
    a.start()
    b.start()
    stream = Stream(tmp_path, MqttConfig(url=[a.url, b.url], reconnect_max=1.0, max_inflight=8))
    try:
        # Two separate brokers (no cluster): a subscriber on each sees its share.
        async with Collector(a, f"{BASE}/#", "col-a") as col_a, \
                Collector(b, f"{BASE}/#", "col-b") as col_b, stream.running():
            up = stream.uplink
            await async_wait_until(lambda: up.counters.acked >= 20, 30, "data via a")
            a.stop()
            await async_wait_until(lambda: up.endpoint.url == b.url and up.connected.is_set(),
                                   30, "failover to b")
            await async_wait_until(lambda: states(col_b) and states(col_b)[-1]["broker"] == b.url,
                                   30, "state on b names b")
            stream.tasks[2].cancel()
            await stream.buffer.commit()
            last = await stream.buffer.max_seq()
            await async_wait_until(lambda: stream.buffer.stats.batches == 0, 60, "drained")
            got = {int(p["seq"]) for p in data(col_a) + data(col_b)}
            assert got == set(range(1, last + 1)), "a batch was lost across the failover"
    finally:
        a.stop()
        b.stop()


def test_reconnect_spread_delays_only_the_first_reconnect(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.pipeline.buffer import Buffer

    buffer = Buffer(tmp_path / "b.sqlite", max_size=2**20, max_age=86400, max_message=131072,
                    commit_interval=1.0)
    cloud = MqttConfig(url="mqtts://x.example:8883", profile="aws-iot")
    assert cloud.spread == 30.0
    assert MqttConfig(url="mqtt://x").spread == 0.0
    up = Uplink(mqtt=MqttConfig(url="mqtt://x", reconnect_spread="7s"), gateway=GATEWAY,
                buffer=buffer, state=state)
    picks: list[tuple[float, float]] = []

    def uniform(lo: float, hi: float) -> float:
        picks.append((lo, hi))
        return hi

    monkeypatch.setattr("agent.pipeline.uplink.random.uniform", uniform)
    backoff = Backoff(1.0, 60.0)
    assert up._retry_delay(backoff, was_up=True) == 7.0
    assert picks == [(0, 7.0)]
    # A failing connect after that follows the backoff, not the spread.
    picks.clear()
    assert up._retry_delay(backoff, was_up=False) == 1.0
    assert picks == [(0.5, 1.0)], "the backoff's own jitter, not the spread"


async def test_pacer_keeps_the_rates_and_serves_live_first() -> None:
    pacer = Pacer(messages_per_s=100, bytes_per_s=512 * 1024, max_message=128 * 1024)
    order: list[str] = []

    async def send(tag: str, size: int, priority: int) -> None:
        await pacer.acquire(size, priority)
        order.append(tag)

    t0 = time.monotonic()
    backlog = [asyncio.create_task(send(f"b{i}", 100, Pacer.BACKLOG)) for i in range(60)]
    await asyncio.sleep(0.05)
    live = asyncio.create_task(send("live", 100, Pacer.LIVE))
    await asyncio.gather(*backlog, live)
    elapsed = time.monotonic() - t0
    # 61 messages at 100/s with a burst of 10: at least ~0.5 s.
    assert elapsed >= 0.45, f"{elapsed:.2f} s: not paced"
    assert order.index("live") < 20, f"live waited behind the backlog: {order.index('live')}"
    assert [t for t in order if t != "live"] == [f"b{i}" for i in range(60)], "reordered"
    # Bytes: 4 x 128 KB at 512 KB/s takes about a second after the burst.
    t0 = time.monotonic()
    for _ in range(5):
        await pacer.acquire(128 * 1024)
    assert time.monotonic() - t0 >= 0.9


async def test_aws_profile_paces_a_backlog_and_live_data_goes_first(broker: Broker,
                                                                    tmp_path: Path) -> None:
    mqtt = MqttConfig(url=broker.url, profile="aws-iot", reconnect_spread=0, max_inflight=16)
    stream = Stream(tmp_path, mqtt)
    await stream.buffer.open()
    for n in range(300):  # a backlog stored while the link was down
        stream.buffer.add("old", [Sample(ts=n, values={"n": n})])
        await stream.buffer.commit()
    await stream.buffer.close()
    stream = Stream(tmp_path, mqtt)
    async with Collector(broker, f"{BASE}/data/#", "col-aws") as col, \
            stream.running(period=0.1):
        t0 = time.monotonic()
        await async_wait_until(lambda: len({int(p["seq"]) for p in data(col)
                                            if p["device"] == "old"}) >= 300, 60, "backlog")
        drain = time.monotonic() - t0
        live_seen = {int(p["seq"]) for p in data(col) if p["device"] == "d2"}
    assert drain >= 2.5, f"300 messages in {drain:.2f} s: faster than 100/s"
    assert live_seen, "no live data during the drain"
    arrival = [str(p["device"]) for p in data(col)]
    last_old = len(arrival) - 1 - arrival[::-1].index("old")
    assert arrival.index("d2") < last_old / 2, "live data waited for the backlog"


async def test_pacer_never_exceeds_100_per_second_in_any_window() -> None:
    pacer = Pacer(messages_per_s=100, bytes_per_s=512 * 1024, max_message=128 * 1024)
    stamps: list[float] = []
    for _ in range(220):
        await pacer.acquire(200)
        stamps.append(time.monotonic())
    worst = max(sum(1 for t in stamps[i:] if t - s < 1.0) for i, s in enumerate(stamps))
    assert worst <= 100, f"{worst} publishes within one second"
    assert stamps[-1] - stamps[0] >= 2.0, "slower than it may be is fine; faster is not"


def test_the_learned_version_is_kept_for_the_list_and_forgotten_for_new_brokers() -> None:
    import aiomqtt
    from aiomqtt.exceptions import MqttConnectError
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from agent.pipeline.brokers import V5, V311, Rotation

    rot = Rotation(MqttConfig(url=["mqtt://a", "mqtt://b"]))
    refused = MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=132))
    assert rot.version(rot.current) == V5
    assert rot.fall_back(rot.current, refused)
    assert not rot.fall_back(rot.current, refused), "learned once"
    assert rot.version(rot.endpoints[1]) == V311, "the whole cluster speaks 3.1.1"
    assert not rot.fall_back(rot.current, aiomqtt.MqttError("timeout"))
    rot.reconfigure(MqttConfig(url=["mqtt://a", "mqtt://b"]))
    assert rot.version(rot.current) == V311
    rot.reconfigure(MqttConfig(url="mqtt://c"))
    assert rot.version(rot.current) == V5
    assert not Rotation(MqttConfig(url="mqtt://a", protocol="5")).fall_back(
        rot.current, refused), "protocol: 5 never falls back"
