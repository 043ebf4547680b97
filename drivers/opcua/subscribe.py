"""Subscribe mode: monitored items, and publish responses turned into samples.

asyncua's high-level ``Subscription`` dispatches one task per data change;
at thousands of changes a second that is most of the CPU.  We register a
plain callback for the whole publish response instead and turn it into
samples in one pass: the data changes sharing a source timestamp become one
sample, as the SPEC asks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from agent.sdk.driver import Emit
from agent.sdk.processing_options import deadband_percent
from agent.sdk.readings import Sample, now_ms
from drivers.opcua.convert import fill, ts_ms
from drivers.opcua.options import OpcuaDevice

__all__ = ["Batcher", "add_items", "create_items", "deadband_filter", "start_subscription",
           "subscription_params"]

_ABSOLUTE, _PERCENT = 1, 2  # ua.DeadbandType values

# What a server answers for a filter it will not apply (no deadband support, a
# percent deadband on a node without an EURange, a non-numeric node).
_FILTER_REFUSED = frozenset({
    "BadFilterNotAllowed",
    "BadDeadbandFilterInvalid",
    "BadMonitoredItemFilterInvalid",
    "BadMonitoredItemFilterUnsupported",
})


def deadband_filter(cfg: OpcuaDevice, index: int) -> ua.DataChangeFilter | None:
    """The tag's deadband (its own, else the device's) as a DataChangeFilter."""
    tag = cfg.tags[index]
    deadband = tag.deadband if tag.deadband is not None else cfg.deadband
    if deadband is None:
        return None
    flt = ua.DataChangeFilter()
    flt.Trigger = ua.DataChangeTrigger.StatusValue
    pct = deadband_percent(deadband)
    flt.DeadbandType = _ABSOLUTE if pct is None else _PERCENT
    flt.DeadbandValue = float(deadband) if pct is None else pct
    return flt


def subscription_params(cfg: OpcuaDevice) -> ua.CreateSubscriptionParameters:
    publish_ms = (cfg.publishing_interval or cfg.interval) * 1000
    # Keep-alives at least every `keepalive` seconds, so a silent subscription
    # is noticed (see Batcher.stale_after); the server drops the subscription
    # after lifetime x interval without our publish requests.
    keepalive_count = max(1, math.ceil(cfg.connection.keepalive * 1000 / publish_ms))
    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = publish_ms
    params.RequestedMaxKeepAliveCount = keepalive_count
    params.RequestedLifetimeCount = max(3 * keepalive_count, math.ceil(60_000 / publish_ms))
    params.MaxNotificationsPerPublish = 0  # no limit: batches are what we want
    params.PublishingEnabled = True
    params.Priority = 0
    return params


def create_items(
    cfg: OpcuaDevice, nodes: Sequence[tuple[int, ua.NodeId]], *, filters: bool = True
) -> list[ua.MonitoredItemCreateRequest]:
    """One request per (tag index, node); the client handle is the tag index."""
    items = []
    for index, node in nodes:
        tag = cfg.tags[index]
        params = ua.MonitoringParameters()
        params.ClientHandle = index
        interval = tag.sampling_interval if tag.sampling_interval is not None else cfg.interval
        params.SamplingInterval = interval * 1000
        params.QueueSize = tag.queue_size or cfg.queue_size
        params.DiscardOldest = True
        flt = deadband_filter(cfg, index) if filters else None
        if flt is not None:  # else asyncua's default: an empty ExtensionObject, no filter
            params.Filter = flt
        item = ua.MonitoredItemCreateRequest()
        item.ItemToMonitor = ua.ReadValueId(NodeId=node, AttributeId=AttributeIds.Value)
        item.MonitoringMode = ua.MonitoringMode.Reporting
        item.RequestedParameters = params
        items.append(item)
    return items


class Batcher:
    """The publish callback: one pass over a response, one ``emit`` call."""

    def __init__(self, names: Sequence[str], emit: Emit, stale_after: float) -> None:
        self.names = list(names)
        self.emit = emit
        self.stale_after = stale_after
        self.last_publish = time.monotonic()
        self.failure: str | None = None
        self.changes = 0

    def stale(self) -> bool:
        return time.monotonic() - self.last_publish > self.stale_after

    def __call__(self, result: ua.PublishResult) -> None:
        self.last_publish = time.monotonic()
        data = result.NotificationMessage.NotificationData
        if not data:
            return  # a keep-alive
        by_ts: dict[int, Sample] = {}
        out: list[Sample] = []
        names = self.names
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                for item in notification.MonitoredItems:
                    self._one(item, names, by_ts, out)
            elif isinstance(notification, ua.StatusChangeNotification):
                # The server ended the subscription (e.g. BadTimeout), or
                # asyncua reports the connection gone (BadShutdown).
                self.failure = f"subscription ended: {notification.Status.name}"
        if out:
            out.sort(key=lambda s: s.ts)
            self.emit(out)

    def _one(
        self, item: Any, names: list[str], by_ts: dict[int, Sample], out: list[Sample]
    ) -> None:
        handle = item.ClientHandle
        if not 0 <= handle < len(names):
            return  # not ours (a stale item of an earlier subscription)
        dv = item.Value
        ts = ts_ms(dv.SourceTimestamp) or ts_ms(dv.ServerTimestamp) or now_ms()
        name = names[handle]
        sample = by_ts.get(ts)
        if sample is None or name in sample.values:
            # A queued second value of the same tag at the same time goes
            # into its own sample rather than overwriting the first.
            sample = Sample(ts=ts, values={})
            by_ts[ts] = sample
            out.append(sample)
        fill(sample, name, dv)
        self.changes += 1


async def start_subscription(
    client: Client, cfg: OpcuaDevice, nodes: Sequence[tuple[int, ua.NodeId]], batcher: Batcher,
    per_call: int, refused: dict[int, str] | None = None,
) -> tuple[int, dict[int, str]]:
    """Create the subscription and its items; return its id and failed tags' statuses."""
    result = await client.uaclient.create_subscription(subscription_params(cfg), batcher)
    sub_id = int(result.SubscriptionId)
    # The server may revise the interval and keep-alive count: a keep-alive
    # comes at the latest every interval x count; three missed ones, plus a
    # request timeout of slack, mean the subscription is dead.
    keepalive = result.RevisedPublishingInterval * max(1, result.RevisedMaxKeepAliveCount) / 1000
    batcher.stale_after = 3 * keepalive + cfg.connection.timeout
    batcher.last_publish = time.monotonic()
    return sub_id, await add_items(client, cfg, sub_id, nodes, per_call, refused)


async def add_items(
    client: Client, cfg: OpcuaDevice, sub_id: int, nodes: Sequence[tuple[int, ua.NodeId]],
    per_call: int, refused: dict[int, str] | None = None,
) -> dict[int, str]:
    """Create monitored items in calls of at most ``per_call``; failed tags' statuses.

    An item whose deadband filter the server refuses is created again without
    it (the agent's own stage stands in); ``refused`` collects those tags' statuses.
    """
    failed = await _create(client, cfg, sub_id, create_items(cfg, nodes), per_call)
    retry = {i: why for i, why in failed.items() if why in _FILTER_REFUSED
             and deadband_filter(cfg, i) is not None}
    if retry:
        again = [(i, n) for i, n in nodes if i in retry]
        for i in retry:
            del failed[i]
        failed.update(await _create(client, cfg, sub_id,
                                    create_items(cfg, again, filters=False), per_call))
        if refused is not None:
            refused.update(retry)
    return failed


async def _create(
    client: Client, cfg: OpcuaDevice, sub_id: int, items: list[ua.MonitoredItemCreateRequest],
    per_call: int,
) -> dict[int, str]:
    failed: dict[int, str] = {}
    start = 0
    while start < len(items):
        chunk = items[start:start + per_call]
        params = ua.CreateMonitoredItemsParameters()
        params.SubscriptionId = sub_id
        params.ItemsToCreate = chunk
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        try:
            results = await client.uaclient.create_monitored_items(params)
        except UaStatusCodeError as err:
            if err.code != StatusCodes.BadTooManyOperations or len(chunk) == 1:
                raise
            per_call = len(chunk) // 2  # the server's real limit is below what it published
            continue
        for item, res in zip(chunk, results, strict=True):
            if not res.StatusCode.is_good():
                failed[item.RequestedParameters.ClientHandle] = res.StatusCode.name
        start += len(chunk)
    return failed
