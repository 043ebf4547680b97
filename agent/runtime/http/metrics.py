"""``/metrics``: the agent's counters in the Prometheus text format.

A registry of our own (never the global default one) holds one custom
collector that reads the agent's in-memory counters at scrape time: nothing
is recorded twice, nothing runs between scrapes, and a scrape is a walk over
a few dataclasses on the event loop (well under a millisecond for dozens of
devices), so it never holds up polling.

Label values are bounded: ``device`` and ``driver`` come from the site file,
``reason`` from a driver's fixed set of counter names (capped per device),
``path`` from the server's fixed routes.  Tag names are never labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from agent import __version__
from agent.runtime.http.page import alarm_rows
from agent.sdk.counters import LATENCY_BUCKETS_MS

if TYPE_CHECKING:
    from agent.runtime.agent import Agent
    from agent.runtime.http.server import Shared

__all__ = ["AgentCollector", "build_registry"]

# Driver reasons per device beyond this are summed as reason="other".
MAX_REASONS = 20
_DEV = ["device", "driver"]
# "le" labels for the read-latency histogram, in seconds.
_BOUNDS = [repr(b / 1000) for b in LATENCY_BUCKETS_MS] + ["+Inf"]


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _reasons(driver: dict[str, int]) -> list[tuple[str, int]]:
    ranked = sorted(driver.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ranked[:MAX_REASONS]
    rest = sum(n for _, n in ranked[MAX_REASONS:])
    return [*top, ("other", rest)] if rest else top


class AgentCollector(Collector):
    def __init__(self, agent: Agent, shared: Shared) -> None:
        self.agent = agent
        self.shared = shared

    def collect(self) -> Iterator[Metric]:
        yield from self._process()
        yield from self._uplink()
        yield from self._buffer()
        yield from self._devices()
        yield from self._alarms()
        yield from self._http()

    def _process(self) -> Iterator[Metric]:
        a = self.agent
        info = InfoMetricFamily("edge_agent_build", "Version and running config (value 1)")
        info.add_metric([], {"version": __version__, "config_hash": a.site.hash})
        yield info
        yield _gauge("edge_agent_uptime_seconds", "Seconds since the agent started", a.uptime())

    def _uplink(self) -> Iterator[Metric]:
        up = self.agent.uplink.counters
        yield _gauge("edge_agent_uplink_connected", "1 while the MQTT session is up",
                     int(up.connected))
        yield _counter("edge_agent_uplink_messages_sent", "Data messages published", up.sent)
        yield _counter("edge_agent_uplink_messages_acked",
                       "Data messages acknowledged by the broker (then deleted from the buffer)",
                       up.acked)
        yield _counter("edge_agent_uplink_connects", "MQTT sessions established", up.reconnects)
        yield _counter("edge_agent_uplink_errors", "Failed sessions and connect attempts",
                       up.errors)

    def _buffer(self) -> Iterator[Metric]:
        s = self.agent.buffer.stats.snapshot()
        yield _gauge("edge_agent_buffer_batches", "Batches stored, not yet acknowledged",
                     s["depth"])
        yield _gauge("edge_agent_buffer_bytes", "Payload bytes stored", s["bytes"])
        yield _gauge("edge_agent_buffer_disk_bytes",
                     "Bytes the buffer's files take (database, WAL, index; <= max_size)",
                     s["disk_bytes"])
        yield _gauge("edge_agent_buffer_oldest_age_seconds",
                     "Age of the oldest stored batch (0 when empty)", s["oldest_age_s"] or 0)
        yield _counter("edge_agent_buffer_committed_samples", "Samples committed to disk",
                       s["committed_samples"])
        yield _counter("edge_agent_buffer_dropped_batches",
                       "Batches dropped by the size/age bounds or a full disk", s["dropped_batches"])
        yield _counter("edge_agent_buffer_dropped_samples",
                       "Samples dropped (bounds, or memory cap while the disk failed)",
                       s["dropped_samples"])
        yield _counter("edge_agent_buffer_write_errors", "Failed commits", s["write_errors"])

    def _devices(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("edge_agent_device_up", "1 while the device answers", labels=_DEV)
        polls = CounterMetricFamily("edge_agent_device_polls", "Successful reads", labels=_DEV)
        errors = CounterMetricFamily("edge_agent_device_errors",
                                     "Failed reads and reads with bad tags", labels=_DEV)
        reasons = CounterMetricFamily("edge_agent_device_driver_errors",
                                      "Errors the driver counted, by reason",
                                      labels=[*_DEV, "reason"])
        overruns = CounterMetricFamily("edge_agent_device_overruns",
                                       "Poll ticks skipped because a read overran", labels=_DEV)
        restarts = CounterMetricFamily("edge_agent_device_restarts",
                                       "Device tasks restarted after an unexpected error",
                                       labels=_DEV)
        connects = CounterMetricFamily("edge_agent_device_connects", "Connections opened",
                                       labels=_DEV)
        last_good = GaugeMetricFamily("edge_agent_device_last_success_timestamp_seconds",
                                      "Unix time of the last good reading", labels=_DEV)
        latency = HistogramMetricFamily("edge_agent_device_read_duration_seconds",
                                        "Time one read of the device took", labels=_DEV)
        for name, runner in self.agent.scheduler.runners.items():
            c = runner.counters
            labels = [name, runner.config.driver]
            up.add_metric(labels, int(c.connected))
            polls.add_metric(labels, c.polls)
            errors.add_metric(labels, c.errors)
            for reason, n in _reasons(dict(c.driver)):
                reasons.add_metric([*labels, reason], n)
            overruns.add_metric(labels, c.overruns)
            connects.add_metric(labels, c.reconnects)
            restarts.add_metric(labels, c.device_restarts)
            if c.last_good_ms is not None:
                last_good.add_metric(labels, c.last_good_ms / 1000)
            cumulative, buckets = 0, []
            for bound, n in zip(_BOUNDS, c.latency_buckets, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            latency.add_metric(labels, buckets, c.latency_sum_ms / 1000)
        yield from (up, polls, errors, reasons, overruns, connects, restarts, last_good, latency)

    def _alarms(self) -> Iterator[Metric]:
        # Hook for the processing stage's alarms: counted per device (alarm
        # names stay out of labels); absent until the stage exposes them.
        active = getattr(self.agent.processing, "active_alarms", None)
        if not callable(active):
            return
        per_device: dict[str, int] = dict.fromkeys(self.agent.scheduler.runners, 0)
        for alarm in alarm_rows(active()):
            if alarm["device"] in per_device:
                per_device[alarm["device"]] += 1
        gauge = GaugeMetricFamily("edge_agent_alarms_active", "Alarms currently raised",
                                  labels=["device"])
        for device, n in per_device.items():
            gauge.add_metric([device], n)
        yield gauge

    def _http(self) -> Iterator[Metric]:
        from agent.runtime.http.server import ROUTES

        req = CounterMetricFamily("edge_agent_http_requests", "Requests to this endpoint",
                                  labels=["path"])
        for path in (*ROUTES, "other"):
            req.add_metric([path], self.shared.requests[path])
        yield req
        yield _counter("edge_agent_http_unauthorized", "Requests refused for a wrong or "
                       "missing token", self.shared.unauthorized)


def build_registry(agent: Agent, shared: Shared) -> CollectorRegistry:
    """Our own registry: the agent's collector plus the process's RSS/CPU/fds."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent, shared))
    # edge_agent_process_*: RSS and CPU from /proc, read only when scraped.
    ProcessCollector(namespace="edge_agent", registry=registry)
    return registry


