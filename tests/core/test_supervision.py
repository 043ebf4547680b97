"""The scheduler supervises every device: a driver's bug or a silent stream restarts that device only.

The drivers here are failure instruments, not protocol stand-ins: one raises
TypeError from read() (a third-party bug), one returns something that is not a
Sample, one streams once and then goes silent, one never answers a read.
They are handed to the Scheduler directly, as a third-party plugin would be.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent.pipeline import device as device_mod
from agent.pipeline.scheduler import Scheduler
from agent.sdk.driver import DeviceConfig, Driver, DriverContext, DriverPlugin, Emit, TagConfig
from agent.sdk.readings import Sample, now_ms
from tests.conftest import async_wait_until


class Steady(Driver):
    """A healthy device: every read answers at once."""

    reads: ClassVar[dict[str, list[float]]] = {}

    async def connect(self) -> None:
        Steady.reads.setdefault(self.config.name, [])

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        Steady.reads[self.config.name].append(time.monotonic())
        return Sample(ts=now_ms(), values={"x": 1})

    async def close(self) -> None:
        pass


class Buggy(Driver):
    """A third-party driver with a bug: read() raises TypeError every time."""

    made: ClassVar[int] = 0

    def __init__(self, config: DeviceConfig, context: DriverContext) -> None:
        super().__init__(config, context)
        Buggy.made += 1

    async def connect(self) -> None:
        pass

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        broken: Any = "x"
        return Sample(ts=now_ms(), values={"x": 1 + broken})

    async def close(self) -> None:
        pass


class Malformed(Buggy):
    """read() returns a dict, not a Sample."""

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        bad: Any = {"x": 1}
        return bad  # type: ignore[no-any-return]


class Silent(Driver):
    """A push device whose stream sends one sample and then nothing, without an error."""

    push = True
    made: ClassVar[int] = 0
    emitted: ClassVar[int] = 0

    def __init__(self, config: DeviceConfig, context: DriverContext) -> None:
        super().__init__(config, context)
        Silent.made += 1

    async def connect(self) -> None:
        pass

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        return Sample(ts=now_ms(), values={"x": 2})

    async def stream(self, emit: Emit) -> None:
        emit([Sample(ts=now_ms(), values={"x": 2})])
        Silent.emitted += 1
        await asyncio.Event().wait()  # the session died and nobody told us

    async def close(self) -> None:
        pass


class Hung(Steady):
    """read() never returns."""

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


PLUGINS = {
    name: DriverPlugin(name=name, config_model=DeviceConfig, factory=factory)
    for name, factory in {"steady": Steady, "buggy": Buggy, "malformed": Malformed,
                          "silent": Silent, "hung": Hung}.items()
}


def device(name: str, driver: str, poll: float) -> DeviceConfig:
    return DeviceConfig(name=name, driver=driver, poll=poll, tags=[TagConfig(name="x")])


def tracebacks(caplog: pytest.LogCaptureFixture, name: str) -> int:
    return sum(1 for r in caplog.records
               if r.name == f"agent.device.{name}" and r.exc_info is not None)


async def test_driver_bug_and_silent_stream_restart_that_device_only(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    out: list[tuple[str, Sample]] = []
    sched = Scheduler(plugins=PLUGINS, state_dir=tmp_path,
                      sink=lambda d, samples: out.extend((d, s) for s in samples))
    made_buggy, made_silent = Buggy.made, Silent.made
    await sched.apply([device("ok-1", "steady", 0.2), device("ok-2", "steady", 0.2),
                       device("buggy", "buggy", 0.2), device("malformed", "malformed", 0.2),
                       device("silent", "silent", 1.0)])
    runners = sched.runners
    started = time.monotonic()
    try:
        await async_wait_until(lambda: runners["silent"].counters.device_restarts >= 2, 60,
                               "the silent stream restarted twice")
        await async_wait_until(lambda: runners["buggy"].counters.device_restarts >= 3, 60,
                               "the buggy driver restarted")
        await async_wait_until(lambda: runners["malformed"].counters.device_restarts >= 2, 60,
                               "the malformed driver restarted")
        elapsed = time.monotonic() - started
        # The healthy devices kept their rate the whole time.
        for name in ("ok-1", "ok-2"):
            c = runners[name].counters
            assert c.overruns == 0, f"{name} missed a poll"
            assert c.device_restarts == 0 and c.errors == 0
            assert c.polls >= 0.8 * elapsed / 0.2, (name, c.polls, elapsed)
    finally:
        await sched.stop_all()
    # Every restart is a fresh driver instance, counted; none took the task down.
    assert Buggy.made - made_buggy >= 3 + 2
    assert Silent.made - made_silent >= 2 and Silent.emitted >= 2
    # The bug is logged with its traceback once, not once per restart.
    assert tracebacks(caplog, "buggy") == 1
    assert tracebacks(caplog, "malformed") == 1
    buggy_errors = [r.getMessage() for r in caplog.records if r.name == "agent.device.buggy"
                    and r.levelno == logging.ERROR]
    assert any("TypeError" in m and "unsupported operand" in m for m in buggy_errors)
    # The outage is visible in the data, with the error.
    bad = [s for d, s in out if d == "buggy" and s.bad]
    assert bad and bad[-1].bad["x"].startswith("TypeError")
    silent_msgs = [r.getMessage() for r in caplog.records if r.name == "agent.device.silent"]
    assert any("no data and no error" in m for m in silent_msgs), silent_msgs
    assert runners["silent"].counters.polls >= 2  # what it did send arrived


async def test_a_raising_sink_restarts_the_device_task(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    seen: list[str] = []

    def sink(name: str, samples: list[Sample]) -> None:
        if name == "crashy" and not samples[-1].bad:
            raise KeyError("observer bug")
        seen.append(name)

    sched = Scheduler(plugins=PLUGINS, state_dir=tmp_path, sink=sink)
    await sched.apply([device("crashy", "steady", 0.2), device("fine", "steady", 0.2)])
    runners = sched.runners
    try:
        await async_wait_until(lambda: runners["crashy"].counters.device_restarts >= 2, 60,
                               "the crashed task restarted")
        task = sched._running["crashy"].task
        assert not task.done(), "the supervised task must survive the crash"
        assert runners["fine"].counters.overruns == 0
    finally:
        await sched.stop_all()
    assert tracebacks(caplog, "crashy") == 1
    assert "fine" in seen


async def test_a_read_that_never_returns_restarts_the_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real grace is 90 s (a read may queue behind others on a shared bus).
    monkeypatch.setattr(device_mod, "READ_GRACE", 0.5)
    sched = Scheduler(plugins=PLUGINS, state_dir=tmp_path, sink=lambda d, s: None)
    await sched.apply([device("hung", "hung", 0.2), device("fine", "steady", 0.2)])
    runners = sched.runners
    try:
        await async_wait_until(lambda: runners["hung"].counters.device_restarts >= 1, 30,
                               "the hung device restarted")
        assert "did not return" in (runners["hung"].counters.last_error or "")
        assert runners["fine"].counters.overruns == 0
    finally:
        await sched.stop_all()


async def test_apply_with_a_driver_that_cannot_build_changes_nothing(tmp_path: Path) -> None:
    def refuse(config: DeviceConfig, context: DriverContext) -> Driver:
        raise ValueError("cannot build")

    plugins = {**PLUGINS, "broken": DriverPlugin(name="broken", config_model=DeviceConfig,
                                                 factory=refuse)}
    sched = Scheduler(plugins=plugins, state_dir=tmp_path, sink=lambda d, s: None)
    await sched.apply([device("a", "steady", 0.2), device("b", "steady", 0.2)])
    before = sched.runners
    try:
        with pytest.raises(ValueError, match="cannot build"):
            await sched.apply([device("a", "steady", 0.3), device("c", "broken", 0.2)])
        assert sched.runners == before, "a refused apply must leave every device running"
        assert all(not r.task.done() for r in sched._running.values())
    finally:
        await sched.stop_all()


async def test_the_watchdog_watches_the_buffer_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.pipeline import buffer as buffer_mod
    from agent.pipeline.buffer import Buffer
    from agent.runtime.systemd import Notifier, Watchdog

    monkeypatch.setattr(buffer_mod, "_IDLE_BEAT", 0.1)  # an idle writer beats too

    watchdog = Watchdog(Notifier(None), 30.0)
    buffer = Buffer(tmp_path / "buffer.sqlite", max_size=1 << 20, max_age=3600.0,
                    max_message=1 << 16, commit_interval=0.05)
    buffer.heartbeat = watchdog.heartbeat("buffer", 0.5)
    await buffer.open()
    task = asyncio.create_task(buffer.run())
    try:
        await asyncio.sleep(1.0)
        assert watchdog.stale() == [], "a committing buffer is fresh"
        hung = asyncio.Event()

        async def stuck_commit() -> int:
            await hung.wait()  # a disk that never answers
            return 0

        monkeypatch.setattr(buffer, "commit", stuck_commit)
        buffer.add("press", [Sample(ts=now_ms(), values={"x": 1})])  # work for the writer
        await async_wait_until(lambda: watchdog.stale() == ["buffer"], 10, "the buffer stale")
        assert not watchdog.check(), "no keep-alive while the buffer writer hangs"
        hung.set()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await buffer.close()
