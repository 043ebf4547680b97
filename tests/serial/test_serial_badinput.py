"""Bad input is counted every time but logged at most once per reason per interval."""

from __future__ import annotations

import logging

import pytest

from agent.sdk.counters import DeviceCounters
from drivers.serial.badinput import BadInput


def test_counted_always_logged_once_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    counters = DeviceCounters()
    bad = BadInput(counters, logging.getLogger("test.badinput"), "scale", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.badinput"):
        for _ in range(500):
            bad.note("no_match", "'HELLO'")
        bad.note("checksum_bad")
        now[0] += 30
        bad.note("no_match", n=10)
        assert len(caplog.records) == 2  # one per reason
        now[0] += 31
        bad.note("no_match")
    assert counters.driver == {"no_match": 511, "checksum_bad": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "no_match x1" in lines[0] and "'HELLO'" in lines[0]
    # The next line reports everything since the previous one.
    assert "no_match x510" in lines[2]
