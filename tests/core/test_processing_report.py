"""The report-by-exception and stale steps, fed samples the way a driver emits them.

Real peers drive the same steps in tests/modbus/test_modbus_report.py and
tests/opcua/test_opcua_report.py; here each rule is checked on its own.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agent.pipeline.buffer import encode_sample
from agent.pipeline.processing import Processing
from agent.pipeline.processing.report import ReportStep, make_report_step
from agent.pipeline.processing.stale import make_stale_step
from agent.sdk import DeviceConfig, Sample
from agent.sdk.processing_options import tag_policy


def device(tags: list[dict[str, Any]], **extra: Any) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {"name": "dev", "driver": "test", "poll": "1s", "tags": tags, **extra})


def report(tags: list[dict[str, Any]], **extra: Any) -> ReportStep:
    step = make_report_step(device(tags, **({"report": "change"} | extra)))
    assert step is not None
    return step


def sent(step: ReportStep, ts: int, values: dict[str, Any], *,
         bad: dict[str, str] | None = None, uncertain: dict[str, str] | None = None
         ) -> dict[str, Any] | None:
    """What of one sample goes out (None: nothing, no sample)."""
    out = step.process([Sample(ts, values, bad or {}, uncertain or {})])
    assert len(out) <= 1
    return out[0].values if out else None


def test_first_sample_is_sent_whole_then_only_changes() -> None:
    step = report([{"name": "a"}, {"name": "b"}, {"name": "s"}])
    assert sent(step, 1000, {"a": 1, "b": 2.5, "s": "x"}) == {"a": 1, "b": 2.5, "s": "x"}
    assert sent(step, 2000, {"a": 1, "b": 2.5, "s": "x"}) is None
    assert sent(step, 3000, {"a": 2, "b": 2.5, "s": "x"}) == {"a": 2}
    assert sent(step, 4000, {"a": 2, "b": 2.5, "s": "y"}) == {"s": "y"}


def test_noise_inside_the_deadband_is_not_sent_and_a_slow_drift_is() -> None:
    step = report([{"name": "t", "deadband": 0.5}])
    assert sent(step, 0, {"t": 20.0}) == {"t": 20.0}
    for i, noise in enumerate((20.2, 19.8, 20.4, 19.6, 20.49)):
        assert sent(step, 1000 * (i + 1), {"t": noise}) is None
    # A drift of 0.1 per poll: compared with the last value *sent*, it goes
    # out once it has moved 0.5 in total, never lost in small steps.
    drift = [20.1, 20.2, 20.3, 20.4, 20.5, 20.6]
    out = [sent(step, 10_000 + 1000 * i, {"t": v}) for i, v in enumerate(drift)]
    assert out == [None, None, None, None, {"t": 20.5}, None]


def test_percent_deadband_is_of_the_range_resolved_at_plan_time() -> None:
    cfg = device([{"name": "p", "range": [0, 200], "deadband": "2%"}], report="change")
    assert tag_policy(cfg, cfg.tags[0]).deadband == pytest.approx(4.0)
    step = make_report_step(cfg)
    assert step is not None
    assert sent(step, 0, {"p": 100}) == {"p": 100}
    assert sent(step, 1000, {"p": 103.9}) is None
    assert sent(step, 2000, {"p": 96}) == {"p": 96}


def test_strings_booleans_and_lists_go_on_any_change_despite_a_deadband() -> None:
    step = report([{"name": "b"}, {"name": "l"}], deadband=100)
    assert sent(step, 0, {"b": False, "l": [1, 2]}) == {"b": False, "l": [1, 2]}
    assert sent(step, 1000, {"b": True, "l": [1, 2]}) == {"b": True}
    assert sent(step, 2000, {"b": True, "l": [1, 3]}) == {"l": [1, 3]}
    # A number turning into a string (a driver's mapping) is a change too.
    assert sent(step, 3000, {"b": "on", "l": [1, 3]}) == {"b": "on"}


def test_quality_changes_always_go_out() -> None:
    step = report([{"name": "a"}, {"name": "b"}], deadband=10)
    assert sent(step, 0, {"a": 1.0, "b": 1.0}) is not None
    out = step.process([Sample(1000, {"a": None, "b": 1.0}, bad={"a": "timeout"})])
    assert [(s.values, s.bad) for s in out] == [({"a": None}, {"a": "timeout"})]
    # The same error again: nothing new.  Another error text: sent.
    assert sent(step, 2000, {"a": None, "b": 1.0}, bad={"a": "timeout"}) is None
    assert sent(step, 3000, {"a": None, "b": 1.0}, bad={"a": "IllegalAddress"}) == {"a": None}
    # Back to good with the old value: a quality change, sent.
    assert sent(step, 4000, {"a": 1.0, "b": 1.0}) == {"a": 1.0}
    out = step.process([Sample(5000, {"a": 1.0, "b": 1.0}, uncertain={"b": "LastUsable"})])
    assert [(s.values, s.uncertain) for s in out] == [({"b": 1.0}, {"b": "LastUsable"})]
    assert sent(step, 6000, {"a": 1.0, "b": 1.0}) == {"b": 1.0}


def test_heartbeat_gap_never_exceeds_heartbeat_plus_one_poll() -> None:
    step = report([{"name": "a"}, {"name": "b", "heartbeat": "3s"}], heartbeat="5s")
    sends: dict[str, list[int]] = {"a": [], "b": []}
    # Polls 1 s apart with some jitter; the values never change.
    ts = 0
    for i in range(60):
        ts = i * 1000 + (137 * i) % 300
        for name in sent(step, ts, {"a": 1, "b": 2}) or {}:
            sends[name].append(ts)
    for name, beat in (("a", 5000), ("b", 3000)):
        gaps = [b - a for a, b in zip(sends[name], sends[name][1:], strict=False)]
        assert gaps and max(gaps) <= beat + 1000 + 300, (name, gaps)
        assert min(gaps) >= beat, (name, gaps)


def test_heartbeat_of_a_down_device_is_bad_never_the_old_value() -> None:
    step = report([{"name": "a"}], heartbeat="2s")
    assert sent(step, 0, {"a": 5}) == {"a": 5}
    out = step.process([Sample.all_bad(["a"], "connection refused", ts=1000)])
    assert out[0].values == {"a": None} and out[0].bad == {"a": "connection refused"}
    beats = [step.process([Sample.all_bad(["a"], "connection refused", ts=t)])
             for t in range(2000, 8000, 1000)]
    resent = [s for batch in beats for s in batch]
    assert resent, "a down device is reported again at the heartbeat"
    assert all(s.values == {"a": None} and s.bad for s in resent)


def test_a_clock_that_goes_back_does_not_silence_the_heartbeat() -> None:
    step = report([{"name": "a"}], heartbeat="10s")
    assert sent(step, 1_000_000, {"a": 1}) is not None
    assert sent(step, 1_001_000, {"a": 1}) is None
    # The wall clock was stepped back an hour: the next reading goes out.
    assert sent(step, 1_000_000 - 3_600_000, {"a": 1}) == {"a": 1}


def test_report_always_passes_the_very_same_sample() -> None:
    assert make_report_step(device([{"name": "a"}])) is None
    assert make_report_step(device([{"name": "a"}], report="always")) is None
    # A change device with one tag on always: that tag is sent every time.
    step = report([{"name": "a", "report": "always"}, {"name": "b"}])
    first = Sample(0, {"a": 1, "b": 2})
    assert step.process([first])[0] is first
    assert sent(step, 1000, {"a": 1, "b": 2}) == {"a": 1}


def test_report_always_output_is_byte_for_byte_what_it_was() -> None:
    processing = Processing()
    cfg = device([{"name": "a", "deadband": 1, "heartbeat": "5s"}, {"name": "b"}])
    processing.apply([cfg])
    samples = [Sample(1000, {"a": 1.5, "b": None}, bad={"b": "timeout"}),
               Sample(2000, {"a": 1.5, "b": "x"}, uncertain={"b": "LastUsable"})]
    before = [encode_sample(s) for s in samples]
    out = processing("dev", samples)
    assert out is samples
    assert [encode_sample(s) for s in out] == before
    assert before[0] == b'{"ts":1000,"values":{"a":1.5,"b":null},"bad":{"b":"timeout"}}'


def test_a_poll_with_nothing_to_send_gives_no_sample() -> None:
    step = report([{"name": "a"}])
    assert step.process([Sample(0, {"a": 1}), Sample(1000, {"a": 1}), Sample(2000, {"a": 1})]) \
        == [Sample(0, {"a": 1})]


def test_config_change_sends_every_tag_again_and_unchanged_device_keeps_state() -> None:
    processing = Processing()
    one = device([{"name": "a"}], report="change")
    other = one.model_copy(update={"name": "other"})
    processing.apply([one, other])
    for name in ("dev", "other"):
        assert processing(name, [Sample(0, {"a": 1})])
        assert processing(name, [Sample(1000, {"a": 1})]) == []
    changed = device([{"name": "a"}], report="change", heartbeat="1m")
    processing.apply([changed, other])
    assert processing("dev", [Sample(2000, {"a": 1})]) == [Sample(2000, {"a": 1})]
    assert processing("other", [Sample(2000, {"a": 1})]) == []


def test_derived_tags_follow_the_devices_keys_and_state_stays_bounded() -> None:
    step = report([{"name": "a"}], deadband=1.0)
    # "power" is not configured here (a computed tag of an earlier step).
    assert sent(step, 0, {"a": 1.0, "power": 10.0}) == {"a": 1.0, "power": 10.0}
    assert sent(step, 1000, {"a": 1.0, "power": 10.5}) is None
    assert sent(step, 2000, {"a": 1.0, "power": 11.0}) == {"power": 11.0}
    assert len(step._value) == 2


def test_nan_is_not_a_change_every_poll() -> None:
    step = report([{"name": "a"}])
    nan = float("nan")
    assert sent(step, 0, {"a": nan}) is not None
    assert sent(step, 1000, {"a": nan}) is None


def test_stale_marks_a_frozen_value_and_clears_when_it_moves() -> None:
    cfg = device([{"name": "a"}, {"name": "b", "stale_after": "10s"}], stale_after="3s")
    stale = make_stale_step(cfg)
    assert stale is not None
    marks = []
    for i in range(6):
        out = stale.process([Sample(i * 1000, {"a": 7, "b": 1})])
        marks.append(out[0].uncertain)
    assert marks[:3] == [{}, {}, {}] and marks[3:] == [{"a": "stale"}] * 3
    moved = stale.process([Sample(6000, {"a": 8, "b": 1})])[0]
    assert moved.uncertain == {}
    # A bad reading ends the run; a driver's own reason is never overwritten.
    stale.process([Sample.all_bad(["a", "b"], "timeout", ts=7000)])
    assert stale.process([Sample(11_000, {"a": 8, "b": 1})])[0].uncertain == {}
    raw = Sample(20_000, {"a": 8, "b": 1}, uncertain={"a": "LastUsable"})
    assert stale.process([raw])[0].uncertain == {"a": "LastUsable"}


def test_stale_then_report_sends_the_quality_changes() -> None:
    processing = Processing()
    processing.apply([device([{"name": "a"}], report="change", stale_after="2s")])
    out = [processing("dev", [Sample(i * 1000, {"a": 1 if i < 5 else 2})]) for i in range(7)]
    flat = [(s.ts, s.values, s.uncertain) for batch in out for s in batch]
    assert flat == [(0, {"a": 1}, {}), (2000, {"a": 1}, {"a": "stale"}), (5000, {"a": 2}, {})]


@pytest.mark.parametrize(("extra", "where", "message"), [
    ({"deadband": -1}, ("deadband",), "finite number >= 0"),
    ({"heartbeat": "500ms"}, ("heartbeat",), "shorter than the poll"),
    ({"stale_after": "200ms"}, ("stale_after",), "shorter than the poll"),
    ({"deadband": "2%"}, ("deadband",), "needs a range"),
    ({"deadband": "120%"}, ("deadband",), "0..100"),
    ({"tags": [{"name": "a", "deadband": "1%"}]}, ("tags", 0, "deadband"), "needs the tag's range"),
    ({"tags": [{"name": "a", "heartbeat": "100ms"}]}, ("tags", 0, "heartbeat"), "shorter"),
    ({"tags": [{"name": "a", "range": [5, 1]}]}, ("tags", 0, "range"), "lo < hi"),
])
def test_mistakes_are_reported_on_their_key(extra: dict[str, Any], where: tuple[Any, ...],
                                             message: str) -> None:
    data: dict[str, Any] = {"name": "dev", "driver": "test", "poll": "1s",
                            "tags": [{"name": "a"}]} | extra
    with pytest.raises(ValidationError) as info:
        DeviceConfig.model_validate(data)
    errors = info.value.errors()
    assert [e["loc"][:len(where)] for e in errors] == [where]
    assert message in errors[0]["msg"]


def test_heartbeat_counts_from_the_last_send_and_waits_for_an_absent_tag() -> None:
    step = report([{"name": "a"}, {"name": "b"}], heartbeat="2s")
    assert sent(step, 0, {"a": 1, "b": 1}) == {"a": 1, "b": 1}
    assert sent(step, 1500, {"a": 2, "b": 1}) == {"a": 2}
    # b is due at 2000; a not before 3500 (its change restarted the count).
    assert sent(step, 2000, {"a": 2, "b": 1}) == {"b": 1}
    assert sent(step, 3000, {"a": 2, "b": 1}) is None
    # a is due at 3500 but a push device's sample may not carry it: it goes
    # out with the next sample that has it, and b's own turn is unaffected.
    assert sent(step, 3600, {"b": 1}) is None
    assert sent(step, 3700, {"b": 1, "a": 2}) == {"a": 2}
    assert sent(step, 4000, {"a": 2, "b": 1}) == {"b": 1}
    assert len(step._heap) == 2, "one heap entry per tag"
