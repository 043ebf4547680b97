"""``metrics`` every interval, with the fields the README lists, and ``state`` extras."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Broker, Collector, async_wait_until
from tests.management.conftest import BASE, payloads, running_agent


async def test_metrics_every_interval_with_monotonic_counters(broker: Broker,
                                                               tmp_path: Path) -> None:
    async with Collector(broker, f"{BASE}/metrics", "metrics-watch") as col, \
            running_agent(broker, tmp_path) as gw:
        await async_wait_until(lambda: len(payloads(col.messages, "/metrics")) >= 3, 30,
                               "three metrics messages")
        first, *_, last = payloads(col.messages, "/metrics")
        assert set(last) >= {"ts", "uptime_s", "config_hash", "cpu", "memory", "buffer",
                             "uplink", "devices"}
        assert last["config_hash"] == gw.agent.site.hash
        assert last["memory"]["rss_bytes"] > 10_000_000
        assert last["cpu"]["user_s"] >= first["cpu"]["user_s"]
        assert last["cpu"]["percent"] is not None and last["cpu"]["percent"] >= 0
        assert set(last["buffer"]) >= {"depth", "bytes", "oldest_age_s", "dropped_batches",
                                       "dropped_samples"}
        assert set(last["uplink"]) >= {"sent", "acked", "reconnects", "connected"}
        press = last["devices"]["sim-press"]
        assert set(press) >= {"polls", "errors", "last_good_ms", "latency_ms", "connected"}
        # Counters are monotonic since start.
        assert last["ts"] > first["ts"] and last["uptime_s"] > first["uptime_s"]
        assert press["polls"] >= first["devices"].get("sim-press", {}).get("polls", 0)
        assert last["uplink"]["acked"] >= first["uplink"]["acked"]
        # 1 s interval (plus one at connect): not a flood either.
        span = (last["ts"] - first["ts"]) / 1000
        assert len(payloads(col.messages, "/metrics")) <= span + 3


async def test_rejected_config_is_reported_on_state(broker: Broker, tmp_path: Path) -> None:
    async with Collector(broker, f"{BASE}/state", "state-watch") as col, \
            running_agent(broker, tmp_path, devices=[]) as gw, gw.client() as rc:
        hash_before = gw.agent.site.hash
        reply = await rc.call("config.apply", {"yaml": "gateway: {id: gw-1}\n"})
        assert reply["ok"] is False

        def last_state() -> dict[str, object]:
            states = payloads(col.messages, "/state")
            return states[-1] if states else {}

        await async_wait_until(lambda: "config_error" in last_state(), 30, "config_error")
        state = last_state()
        assert state["status"] == "online" and state["config_hash"] == hash_before
        assert "gateway.site" in str(state["config_error"])
        # A good push clears it.
        ok = await rc.call("config.apply", {"yaml": gw.site_text(devices=[]).replace(
            "metrics_interval: 1s", "metrics_interval: 2s")})
        assert ok["ok"], ok
        await async_wait_until(lambda: "config_error" not in last_state() and
                               last_state().get("config_hash") == gw.agent.site.hash, 30,
                               "config_error cleared")
