"""``/metrics`` from a running agent (Modbus simulator, dead device, Mosquitto),
parsed with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from drivers.modbus.simulator import TAGS
from tests.conftest import async_wait_until
from tests.http.conftest import Running, get


async def scrape(r: Running) -> dict[str, Metric]:
    reply = await get(r.base + "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return {m.name: m for m in text_string_to_metric_families(reply.body.decode())}


def value(families: dict[str, Metric], name: str, suffix: str = "", **labels: str) -> float:
    found = [s.value for s in families[name].samples
             if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, families[name].samples)
    return float(found[0])


async def test_metric_names_types_and_labels(running: Running) -> None:
    m = await scrape(running)
    expected_types = {
        "edge_agent_build_info": "gauge",  # an info metric, as the text format spells it
        "edge_agent_uptime_seconds": "gauge",
        "edge_agent_uplink_connected": "gauge",
        "edge_agent_uplink_messages_sent": "counter",
        "edge_agent_uplink_messages_acked": "counter",
        "edge_agent_buffer_batches": "gauge",
        "edge_agent_buffer_bytes": "gauge",
        "edge_agent_buffer_oldest_age_seconds": "gauge",
        "edge_agent_buffer_dropped_samples": "counter",
        "edge_agent_device_up": "gauge",
        "edge_agent_device_polls": "counter",
        "edge_agent_device_errors": "counter",
        "edge_agent_device_overruns": "counter",
        "edge_agent_device_restarts": "counter",
        "edge_agent_device_read_duration_seconds": "histogram",
        "edge_agent_http_unauthorized": "counter",
        "edge_agent_process_resident_memory_bytes": "gauge",
    }
    assert {n: m[n].type for n in expected_types if n in m} == expected_types
    assert all(n.startswith("edge_agent_") for n in m), sorted(m)
    tag_names = {t["name"] for t in TAGS}
    for family in m.values():
        for s in family.samples:
            if family.type == "counter":
                assert s.name.endswith("_total"), s.name
            assert not tag_names & set(s.labels.values()), s  # tags are never labels
            if s.name.startswith("edge_agent_device_"):
                assert s.labels["device"] in {"sim-press", "dead-1"}
                assert s.labels["driver"] == "modbus"
    build = m["edge_agent_build_info"].samples[0]
    assert build.labels["config_hash"] == running.agent.site.hash
    assert value(m, "edge_agent_device_up", device="sim-press") == 1
    assert value(m, "edge_agent_device_up", device="dead-1") == 0
    assert value(m, "edge_agent_device_errors", "_total", device="dead-1") >= 1
    assert value(m, "edge_agent_uplink_connected") == 1
    # The histogram's buckets are cumulative and end at +Inf == count.
    buckets = [s for s in m["edge_agent_device_read_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["device"] == "sim-press"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"
    assert counts[-1] == value(m, "edge_agent_device_read_duration_seconds", "_count",
                               device="sim-press") >= 3


async def test_values_move_between_scrapes(running: Running) -> None:
    first = await scrape(running)
    polls = running.agent.scheduler.runners["sim-press"].counters
    dead = running.agent.scheduler.runners["dead-1"].counters
    target = polls.polls + 3
    # The dead device retries with a backoff of up to 4 s: each retry is an error.
    dead_target = value(first, "edge_agent_device_errors", "_total", device="dead-1") + 1
    acked = value(first, "edge_agent_uplink_messages_acked", "_total")
    await async_wait_until(lambda: polls.polls >= target and dead.errors >= dead_target
                           and running.agent.uplink.counters.acked > acked, 30, "more polls")
    second = await scrape(running)

    def moved(name: str, suffix: str = "", **labels: str) -> bool:
        return value(second, name, suffix, **labels) > value(first, name, suffix, **labels)

    assert moved("edge_agent_uptime_seconds")
    assert moved("edge_agent_device_polls", "_total", device="sim-press")
    assert moved("edge_agent_device_read_duration_seconds", "_count", device="sim-press")
    assert moved("edge_agent_device_read_duration_seconds", "_sum", device="sim-press")
    assert moved("edge_agent_device_errors", "_total", device="dead-1")
    assert moved("edge_agent_uplink_messages_acked", "_total")
    assert moved("edge_agent_http_requests", "_total", path="/metrics")
    # The dead device never reads: no latency observed, no last success.
    assert value(second, "edge_agent_device_read_duration_seconds", "_count", device="dead-1") == 0
    assert not [s for s in second["edge_agent_device_last_success_timestamp_seconds"].samples
                if s.labels["device"] == "dead-1"]


async def test_active_alarms_hook(running: Running) -> None:
    # Stand-in for the processing stage's alarms, in its shape.
    alarm = {"alarm": "oil_hot", "tag": "oil_temp", "since": 1, "value": 91.5, "limit": 90,
             "severity": "high"}
    running.agent.processing.active_alarms = (  # type: ignore[method-assign]
        lambda: {"sim-press": [alarm, {**alarm, "alarm": "oil_very_hot"}]})
    m = await scrape(running)
    assert m["edge_agent_alarms_active"].type == "gauge"
    assert value(m, "edge_agent_alarms_active", device="sim-press") == 2
    assert value(m, "edge_agent_alarms_active", device="dead-1") == 0
    status = (await get(running.base + "/api/status")).json()
    assert status["alarms"] == {"sim-press": [alarm, {**alarm, "alarm": "oil_very_hot"}]}
