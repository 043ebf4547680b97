# asyncua annotates its constructors with NewTypes (ua.Int16, ua.String, ...) and
# re-exports without __all__; plain ints/strs are what it takes at run time.
# mypy: disable-error-code="arg-type, attr-defined"
"""Publish responses to samples, with asyncua's own message types (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from asyncua import ua

from agent.sdk.readings import Sample
from drivers.opcua.subscribe import Batcher

T0 = datetime(2030, 1, 1, tzinfo=UTC)
MS0 = int(T0.timestamp() * 1000)


def change(handle: int, value: float, ts: datetime, status: int = 0) -> ua.MonitoredItemNotification:
    item = ua.MonitoredItemNotification()
    item.ClientHandle = handle
    item.Value = ua.DataValue(ua.Variant(value, ua.VariantType.Double),
                              StatusCode=ua.StatusCode(status), SourceTimestamp=ts)
    return item


def publish(*data: object) -> ua.PublishResult:
    result = ua.PublishResult()
    result.NotificationMessage = ua.NotificationMessage(NotificationData=list(data))
    return result


def test_one_sample_per_source_timestamp_in_time_order() -> None:
    out: list[list[Sample]] = []
    batcher = Batcher(["a", "b"], out.append, stale_after=10)
    later = T0 + timedelta(milliseconds=250)
    batcher(publish(ua.DataChangeNotification(MonitoredItems=[
        change(0, 1.0, later), change(1, 2.0, T0), change(0, 3.0, T0), change(7, 9.9, T0),
    ])))
    assert len(out) == 1  # one emit per publish response
    assert [(s.ts, s.values) for s in out[0]] == [(MS0, {"b": 2.0, "a": 3.0}),
                                                  (MS0 + 250, {"a": 1.0})]
    assert batcher.changes == 3  # the unknown handle 7 is ignored


def test_queued_values_of_one_tag_at_one_time_are_kept_apart() -> None:
    out: list[list[Sample]] = []
    batcher = Batcher(["a"], out.append, stale_after=10)
    batcher(publish(ua.DataChangeNotification(MonitoredItems=[
        change(0, 1.0, T0), change(0, 2.0, T0, ua.StatusCodes.BadOutOfRange)])))
    assert [(s.values, s.bad) for s in out[0]] == [({"a": 1.0}, {}),
                                                   ({"a": None}, {"a": "BadOutOfRange"})]


def test_keepalive_and_status_change() -> None:
    out: list[list[Sample]] = []
    batcher = Batcher(["a"], out.append, stale_after=60)
    batcher.last_publish -= 120  # as if the last message came two minutes ago
    assert batcher.stale()
    batcher(publish())  # a keep-alive: nothing to emit, but the subscription is alive
    assert out == [] and not batcher.stale() and batcher.failure is None
    batcher(publish(ua.StatusChangeNotification(Status=ua.StatusCode(ua.StatusCodes.BadTimeout))))
    assert batcher.failure == "subscription ended: BadTimeout"
