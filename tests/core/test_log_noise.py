"""Library noise: a backlog drain and an OPC UA server restart log a few lines at most."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua.ua.uaerrors import BadSessionIdInvalid, UaError

from agent.config.model import GatewayConfig, MqttConfig
from agent.pipeline.buffer import Buffer
from agent.pipeline.uplink import Uplink
from agent.runtime.logs import set_level, setup_logging
from agent.sdk.readings import Sample
from tests.conftest import Broker, async_wait_until

PENDING = "pending publish calls"


class Records(logging.Handler):
    """Every record a logger emits, before our handler's filter: the 'before'."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def journal() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    setup_logging("info", stream=out)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        set_level(logging.getLevelName(level).lower() if level else "warning")


def state(status: str) -> dict[str, Any]:
    return {"status": status, "version": "test", "started_at": "now", "config_hash": "x"}


async def test_backlog_drain_logs_no_pending_publish_lines(
        broker: Broker, tmp_path: Path, journal: io.StringIO) -> None:
    buffer = Buffer(tmp_path / "b.sqlite", max_size=64 * 1024**2, max_age=86400,
                    max_message=128 * 1024, commit_interval=0.05)
    await buffer.open()
    # A backlog, as after an outage: 400 batches waiting.
    for n in range(400):
        buffer.add("d1", [Sample(ts=n, values={"n": n})])
        await buffer.commit()
    assert buffer.stats.batches >= 400
    raw = Records()
    logging.getLogger("mqtt").addHandler(raw)
    uplink = Uplink(mqtt=MqttConfig(url=broker.url, max_inflight=64),
                    gateway=GatewayConfig(id="gw1", site="s1"), buffer=buffer, state=state)
    tasks = [asyncio.create_task(buffer.run()), asyncio.create_task(uplink.run())]
    try:
        await async_wait_until(lambda: buffer.stats.batches == 0, 60, "backlog drained")
    finally:
        logging.getLogger("mqtt").removeHandler(raw)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await buffer.close()
    # aiomqtt did complain (the test can fail), and none of it reached the log.
    library_lines = sum(PENDING in r.getMessage() for r in raw.records)
    print(f"drain of 400 batches: aiomqtt logged {library_lines} pending-publish lines")
    assert library_lines >= 5
    lines = journal.getvalue().splitlines()
    assert not [line for line in lines if PENDING in line], lines[:5]
    assert len([line for line in lines if " mqtt" in line]) <= 3, lines


def test_pending_publish_lines_are_shown_at_debug(journal: io.StringIO) -> None:
    set_level("debug")
    logging.getLogger("mqtt").warning("There are %d pending publish calls.", 17)
    set_level("info")
    logging.getLogger("mqtt").warning("There are %d pending publish calls.", 18)
    assert journal.getvalue().count(PENDING) == 1
    assert "There are 17 pending" in journal.getvalue()


def _publish_crash(n: int) -> None:
    log = logging.getLogger("asyncua.client.ua_session.UaSession")
    for _ in range(n):
        try:
            raise BadSessionIdInvalid()  # type: ignore[no-untyped-call]
        except UaError:
            log.exception("Publish iteration crashed; retrying in 1s")


def test_publish_crash_traceback_is_one_line_per_window(journal: io.StringIO) -> None:
    # What asyncua's publish loop logs each second while a restarted server
    # answers the old session (an exception the driver's filter lets pass).
    _publish_crash(20)
    lines = journal.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "Publish iteration crashed" in lines[0] and "BadSessionIdInvalid" in lines[0]
    assert "Traceback" not in journal.getvalue()
    set_level("debug")
    _publish_crash(3)
    assert journal.getvalue().count("Traceback") == 3
