"""The small parts alone: token parsing, loopback rule, histogram buckets,
the problem ring, and escaping on the page."""

from __future__ import annotations

import logging

import pytest

from agent.config.model import is_loopback, split_listen
from agent.runtime.http.auth import presented_token, token_ok
from agent.runtime.http.page import render_page
from agent.runtime.logs import _clear_secrets, register_secret
from agent.runtime.recent_log import RecentProblems
from agent.sdk.counters import LATENCY_BUCKETS_MS, DeviceCounters, UplinkCounters


def test_token_sources_and_compare() -> None:
    assert presented_token({"authorization": "Bearer abc"}, "token=zzz") == "abc"
    assert presented_token({}, "a=1&token=xyz") == "xyz"
    assert presented_token({"authorization": "Basic abc"}, "") is None
    assert token_ok(None, {}, "")
    assert not token_ok("abc", {}, "")
    assert not token_ok("abc", {"authorization": "Bearer abd"}, "")
    assert not token_ok("abc", {}, "token=ab")
    assert token_ok("abc", {}, "token=abc")


@pytest.mark.parametrize(("listen", "host", "loop"), [
    ("127.0.0.1:9180", "127.0.0.1", True), ("localhost:1", "localhost", True),
    ("[::1]:9180", "::1", True), ("127.3.2.1:80", "127.3.2.1", True),
    ("0.0.0.0:9180", "0.0.0.0", False), ("[::]:9180", "::", False),
    ("gateway.lan:9180", "gateway.lan", False), ("10.0.0.5:9180", "10.0.0.5", False),
])
def test_listen_and_loopback(listen: str, host: str, loop: bool) -> None:
    assert split_listen(listen)[0] == host
    assert is_loopback(host) is loop


@pytest.mark.parametrize("bad", ["9180", "host:", ":9180", "h:0", "h:70000", "h:x"])
def test_bad_listen(bad: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_listen(bad)


def test_latency_histogram_buckets() -> None:
    c = DeviceCounters()
    for ms in (0.5, 1.0, 1.1, 40, 10_000, 99_999):
        c.observe_latency(ms)
    b = c.latency_buckets
    assert len(b) == len(LATENCY_BUCKETS_MS) + 1 and sum(b) == 6
    assert b[0] == 2  # le 1 ms: 0.5 and exactly 1.0
    assert b[1] == 1  # le 2.5 ms
    assert b[LATENCY_BUCKETS_MS.index(50)] == 1
    assert b[LATENCY_BUCKETS_MS.index(10_000)] == 1 and b[-1] == 1  # beyond every bound
    assert c.last_latency_ms == 99_999 and c.latency_sum_ms == pytest.approx(110_041.6)


def test_uplink_connected_since() -> None:
    u = UplinkCounters()
    assert u.connected_since_ms is None
    u.connected = True
    since = u.connected_since_ms
    assert since is not None
    u.connected = True  # no change: the session's start stays
    assert u.connected_since_ms == since
    u.connected = False
    assert u.connected_since_ms is None and u.snapshot()["connected_since_ms"] is None


def test_problem_ring_is_bounded_and_redacted() -> None:
    ring = RecentProblems(size=3)
    log = logging.getLogger("test.http.ring")
    log.addHandler(ring)
    register_secret("hunter2-secret")
    try:
        log.info("not a problem")
        for i in range(5):
            log.warning("problem %d with hunter2-secret", i)
        log.error("x" * 1000)
    finally:
        log.removeHandler(ring)
        _clear_secrets()
    items = ring.items()
    assert [i["message"][:9] for i in items] == ["problem 3", "problem 4", "x" * 9]
    assert "hunter2" not in str(items) and "***" in items[0]["message"]
    assert len(items[-1]["message"]) == 300 and items[-1]["level"] == "error"


def test_page_escapes_values() -> None:
    evil = "<script>alert(1)</script>"
    html = render_page({
        "gateway": {"id": "gw", "site": "s"}, "version": "1", "config_hash": "h", "ts": 0,
        "uptime_s": 1.0, "broker": "b:1",
        "uplink": {"connected": False, "sent": 0, "acked": 0, "last_error": evil},
        "buffer": {"depth": 0, "bytes": 0, "oldest_age_s": None, "dropped_samples": 0},
        "devices": {"d": {"connected": True, "polls": 1, "errors": 0}},
        "device_info": {"d": {"driver": "serial", "units": {"t": evil}}},
        "latest": {"d": {"ts": 0, "values": {"t": evil}}},
        "problems": [{"ts_ms": 0, "level": "error", "message": evil}],
        "alarms": {"d": [{"alarm": evil, "tag": "t", "severity": "high", "value": 1,
                          "since": 0}]},
    })
    assert evil not in html and html.count("&lt;script&gt;") == 5
    assert html.count("<script>") == 1  # the page's own
