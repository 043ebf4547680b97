"""The processing stage around the analytics steps: order, failures, state across apply."""

from __future__ import annotations

import logging

import pytest

from agent.pipeline.processing import STEP_FACTORIES, DeviceChain, Processing, Step
from agent.sdk import DeviceConfig
from agent.sdk.readings import Sample
from tests.modbus.helpers_modbus import device

TAGS = [{"name": "a", "address": "HR0", "type": "float32"}]
ALARM = {"name": "hot", "tag": "a", "above": 10}


class Exploding:
    def process(self, samples: list[Sample]) -> list[Sample]:
        raise RuntimeError("a bug")


def exploding(config: DeviceConfig) -> Step:
    return Exploding()


def test_a_failing_step_loses_no_reading(caplog: pytest.LogCaptureFixture) -> None:
    config = device(502, TAGS, alarms=[ALARM])
    chain = DeviceChain(config, (exploding, *STEP_FACTORIES))
    with caplog.at_level(logging.ERROR):
        out = chain.process([Sample(ts=1, values={"a": 20.0})])
        out += chain.process([Sample(ts=2, values={"a": 21.0})])
    assert [s.values["a"] for s in out] == [20.0, 21.0]
    assert [e["state"] for s in out for e in s.events] == ["active"], "later steps still ran"
    assert chain.errors == 2
    assert sum("processing step Exploding failed" in r.message for r in caplog.records) == 1


def test_alarms_listed_per_device_and_reset_by_a_config_change() -> None:
    stage = Processing()
    one, two = device(502, TAGS, name="one", alarms=[ALARM]), device(502, TAGS, name="two")
    stage.apply([one, two])
    stage("one", [Sample(ts=5, values={"a": 11.0})])
    stage("two", [Sample(ts=5, values={"a": 11.0})])
    assert stage.active_alarms() == {"one": [{"alarm": "hot", "tag": "a", "since": 5,
                                              "value": 11.0, "limit": 10.0,
                                              "severity": "medium"}]}
    stage.apply([one, two])  # unchanged: state kept
    assert "one" in stage.active_alarms()
    stage.apply([device(502, TAGS, name="one", alarms=[{**ALARM, "above": 12}]), two])
    assert stage.active_alarms() == {}, "a changed device starts with its alarms cleared"


def test_steps_run_in_order_before_anything_else_is_added() -> None:
    names = [f.__name__ for f in STEP_FACTORIES]
    analytics = ["make_computed", "make_windows", "make_alarms", "make_raw_filter"]
    assert [n for n in names if n in analytics] == analytics
