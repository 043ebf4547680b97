"""``config.apply``: every problem or a live apply; no gap, nothing lost; rollback on uplink loss."""

from __future__ import annotations

import copy
import itertools
import json
import time
from pathlib import Path
from typing import Any

import yaml

from agent.cli.remote.client import RemoteTimeout
from agent.config.store import LAST_GOOD
from tests.conftest import Broker, Collector, async_wait_until, free_port
from tests.management.conftest import BASE, Running, payloads, running_agent


def data_by_device(col: Collector) -> tuple[dict[int, dict[str, Any]], dict[str, list[int]]]:
    """Delivered batches by seq, and every sample ts by device (duplicates dropped)."""
    batches = {int(p["seq"]): p for p in payloads(col.messages, "") if "seq" in p}
    ts: dict[str, set[int]] = {}
    for batch in batches.values():
        ts.setdefault(batch["device"], set()).update(s["ts"] for s in batch["samples"])
    return batches, {d: sorted(v) for d, v in ts.items()}


def max_gap_ms(stamps: list[int], start: int, end: int) -> int:
    window = [t for t in stamps if start <= t <= end]
    assert len(window) >= 2, f"too few samples in the window: {window}"
    return max(b - a for a, b in itertools.pairwise(window))


async def drained(gw: Running, col: Collector) -> bool:
    batches, _ = data_by_device(col)
    return bool(batches) and max(batches) == await gw.agent.buffer.max_seq()


async def test_invalid_config_answers_every_problem_and_changes_nothing(
        broker: Broker, tmp_path: Path) -> None:
    async with running_agent(broker, tmp_path) as gw, gw.client() as rc:
        before_text = gw.site_path.read_text()
        before_hash = gw.agent.site.hash
        runner = gw.agent.scheduler.runners["sim-press"]
        bad = yaml.safe_load(gw.site_text())
        bad["management"]["metrics_intervall"] = "1s"          # typo
        bad["buffer"]["max_age"] = "seven days"                 # bad unit
        bad["devices"][0]["poll"] = "fast"                      # bad duration in a driver model
        bad["devices"][0]["tags"][0]["address"] = "XX100"       # bad Modbus address
        reply = await rc.call("config.apply", {"yaml": yaml.safe_dump(bad)})
        assert reply["ok"] is False
        lines = reply["error"].splitlines()
        assert reply["problems"] == lines
        assert len(lines) == 4, lines
        assert all(line.split(":", 1)[0].isdigit() for line in lines), lines
        text = "\n".join(lines)
        for where in ("management.metrics_intervall", "buffer.max_age", "devices[0].poll",
                      "devices[0].tags[0].address"):
            assert where in text, (where, text)
        assert "did you mean" in text or "metrics_interval" in text
        # Nothing changed: file, running config, the device's runner.
        assert gw.site_path.read_text() == before_text
        assert gw.agent.site.hash == before_hash
        assert gw.agent.scheduler.runners["sim-press"] is runner
        # YAML that does not even parse, and a missing argument.
        broken = await rc.call("config.apply", {"yaml": "gateway: [unclosed\n"})
        assert broken["ok"] is False and broken["error"].split(":", 1)[0].isdigit()
        missing = await rc.call("config.apply", {})
        assert missing["ok"] is False and "needs {\"yaml\"" in missing["error"]


async def test_push_while_readings_flow_no_gap_nothing_lost(broker: Broker,
                                                            tmp_path: Path) -> None:
    async with Collector(broker, f"{BASE}/data/#", "data-watch") as col, \
            running_agent(broker, tmp_path, n_sims=2) as gw, gw.client() as rc:
        keep, change = "sim-press-0", "sim-press-1"
        await async_wait_until(lambda: len(data_by_device(col)[1].get(keep, [])) >= 10, 30,
                               "readings flowing")
        kept_runner = gw.agent.scheduler.runners[keep]
        devices = copy.deepcopy(gw.devices)
        devices[1]["tags"] = [t for t in devices[1]["tags"] if t["name"] != "alarm"]
        new_text = gw.site_text(devices=devices)
        from agent.sdk.readings import now_ms
        pushed_at = now_ms()
        reply = await rc.call("config.apply", {"yaml": new_text})
        assert reply["ok"], reply
        result = reply["result"]
        assert result["applied"] is True
        assert result["changes"] == {"started": [], "restarted": [change], "stopped": []}
        # The file is the new config, on probation; the unchanged runner kept running.
        assert gw.site_path.read_text() == new_text
        assert gw.agent.lifecycle.pending
        assert (gw.agent.state_dir / LAST_GOOD).read_text() != new_text
        assert gw.agent.scheduler.runners[keep] is kept_runner
        assert gw.agent.scheduler.runners[change].config.tag_names() == [
            "oil_temp", "cycles", "running", "setpoint"]
        await async_wait_until(lambda: any(
            "alarm" not in s["values"] and s["ts"] > pushed_at
            for b in data_by_device(col)[0].values() if b["device"] == change
            for s in b["samples"]), 30, "readings of the changed device without alarm")
        await async_wait_until(lambda: max(data_by_device(col)[1][keep]) > pushed_at + 2000, 30,
                               "2 s of readings after the push")
        await async_wait_until(lambda: drained(gw, col), 30, "the buffer drained")
        # After its probation (the uplink stayed up) it is last-good.
        await async_wait_until(lambda: not gw.agent.lifecycle.pending, 30, "the promotion")
        assert (gw.agent.state_dir / LAST_GOOD).read_text() == new_text
        batches, stamps = data_by_device(col)
        # Nothing lost: every stored batch was delivered, seq without a gap.
        assert set(batches) == set(range(min(batches), max(batches) + 1))
        assert min(batches) == 1
        # No gap for the unchanged device: 200 ms polls, none missed around the push.
        gap = max_gap_ms(stamps[keep], pushed_at - 2000, pushed_at + 2000)
        assert gap < 1.6 * 200, f"{keep}: {gap} ms between readings around the push"


async def test_twenty_devices_one_changed_the_others_miss_no_poll(broker: Broker,
                                                                  tmp_path: Path) -> None:
    import contextlib

    from drivers.modbus.simulator import simulate
    from tests.conftest import fast

    async with contextlib.AsyncExitStack() as stack:
        template = fast(await simulate(stack, tmp_path), poll="500ms")[0]
        devices = []
        for i in range(20):
            d = copy.deepcopy(template)
            d["name"] = f"dev-{i:02d}"
            devices.append(d)
        async with Collector(broker, f"{BASE}/data/#", "data-watch-20") as col, \
                running_agent(broker, tmp_path, devices=devices) as gw, gw.client() as rc:
            runners = gw.agent.scheduler.runners
            await async_wait_until(lambda: all(r.counters.polls >= 4 for r in runners.values()),
                                   30, "every device polling")
            before = {n: (r, r.counters.overruns, r.counters.errors) for n, r in runners.items()}
            new = copy.deepcopy(devices)
            new[7]["tags"] = new[7]["tags"][:2]
            from agent.sdk.readings import now_ms
            pushed_at = now_ms()
            reply = await rc.call("config.apply", {"yaml": gw.site_text(devices=new)})
            assert reply["ok"], reply
            assert reply["result"]["changes"]["restarted"] == ["dev-07"]
            await async_wait_until(lambda: all(
                max(data_by_device(col)[1].get(n, [0])) > pushed_at + 2500 for n in before
                if n != "dev-07"), 30, "2.5 s of readings after the push")
            _, stamps = data_by_device(col)
            for name, (runner, overruns, errors) in before.items():
                if name == "dev-07":
                    assert gw.agent.scheduler.runners[name] is not runner
                    continue
                assert gw.agent.scheduler.runners[name] is runner, f"{name} was restarted"
                assert runner.counters.overruns == overruns, f"{name} missed a poll"
                assert runner.counters.errors == errors, f"{name} had an error"
                gap = max_gap_ms(stamps[name], pushed_at - 1500, pushed_at + 2500)
                assert gap < 1.6 * 500, f"{name}: {gap} ms between readings around the push"


async def test_uplink_change_that_connects_is_confirmed(broker: Broker, tmp_path: Path) -> None:
    async with running_agent(broker, tmp_path, devices=[]) as gw, gw.client() as rc:
        reconnects = gw.agent.uplink.counters.reconnects
        text = gw.site_text(keepalive="31s")
        t0 = time.monotonic()
        reply = await rc.call("config.apply", {"yaml": text})
        assert reply["ok"] and reply["result"]["uplink"] == "reconnecting", reply
        await async_wait_until(lambda: gw.agent.uplink.counters.reconnects == reconnects + 1,
                               30, "the reconnect")
        assert time.monotonic() - t0 < 8, "the reconnect with the new settings was held up"
        assert (gw.agent.state_dir / LAST_GOOD).read_text() != text, "promoted before probation"
        await async_wait_until(lambda: not gw.agent.lifecycle.pending, 30, "the push confirmed")
        assert time.monotonic() - t0 >= 5, "promoted before its 5 s probation"
        assert (gw.agent.state_dir / LAST_GOOD).read_text() == text
        assert gw.agent.report.rollback is None
        good = gw.agent.lifecycle.good
        assert good is not None and good.hash == gw.agent.site.hash


async def test_config_that_loses_the_uplink_is_rolled_back(broker: Broker, tmp_path: Path) -> None:
    async with Collector(broker, f"{BASE}/state", "state-watch-rb") as col, \
            running_agent(broker, tmp_path) as gw, gw.client() as rc:
        good_text = gw.site_path.read_text()
        good_hash = gw.agent.site.hash
        runner = gw.agent.scheduler.runners["sim-press"]
        dead_url = f"mqtt://127.0.0.1:{free_port()}"
        bad = yaml.safe_load(gw.site_text())
        bad["uplink"]["mqtt"]["url"] = dead_url
        bad["management"]["rollback_after"] = "5s"
        bad_text = yaml.safe_dump(bad)
        t0 = time.monotonic()
        reply = await rc.call("config.apply", {"yaml": bad_text})
        assert reply["ok"], reply
        assert reply["result"]["rollback_after_s"] == 5.0
        assert reply["result"]["previous_hash"] == good_hash
        # Applied and written, last-good kept.
        assert gw.site_path.read_text() == bad_text
        assert (gw.agent.state_dir / LAST_GOOD).read_text() == good_text
        # The reply goes out before the uplink switches (it would be lost after).
        await async_wait_until(lambda: gw.agent.uplink.mqtt.url == dead_url, 30, "the switch")
        await async_wait_until(lambda: gw.agent.report.rollback is not None, 30, "the rollback")
        # On time: nothing in the apply path may stall the watch (an ending
        # session's publish once did, for the client's 30 s timeout).
        assert time.monotonic() - t0 < 5 + 4, f"rolled back after {time.monotonic() - t0:.1f} s"
        assert gw.agent.site.hash == good_hash
        assert gw.site_path.read_text() == good_text
        await async_wait_until(lambda: gw.agent.uplink.connected.is_set(), 30, "uplink back")

        def rolled_back_state() -> dict[str, Any] | None:
            states = [s for s in payloads(col.messages, "/state") if "rollback" in s]
            return states[-1] if states else None

        await async_wait_until(rolled_back_state, 30, "the rollback on state")
        state = rolled_back_state()
        assert state is not None and state["status"] == "online"
        assert state["config_hash"] == good_hash
        assert state["rollback"]["to"] == good_hash
        assert "lost the uplink for 5 s" in state["rollback"]["reason"]
        assert "rolled back" in state["rollback"]["reason"]
        # The device was never restarted: the uplink is not its business.
        assert gw.agent.scheduler.runners["sim-press"] is runner
        # Commands work again.
        assert (await rc.call("ping"))["ok"]
        assert json.loads(json.dumps(state))  # plain JSON for any consumer


async def test_restart_during_probation_still_rolls_back(broker: Broker, tmp_path: Path) -> None:
    import asyncio
    import sys

    from agent.config.store import PROBATION

    async with Collector(broker, f"{BASE}/state", "state-watch-restart") as col:
        async with running_agent(broker, tmp_path, devices=[]) as gw, gw.client() as rc:
            site_path, state = gw.site_path, gw.agent.state_dir
            good_text = site_path.read_text()
            bad = yaml.safe_load(gw.site_text(devices=[]))
            bad["uplink"]["mqtt"]["url"] = f"mqtt://127.0.0.1:{free_port()}"
            bad["management"]["rollback_after"] = "5s"
            reply = await rc.call("config.apply", {"yaml": yaml.safe_dump(bad)})
            assert reply["ok"], reply
            assert (state / PROBATION).exists()
        # Stopped before the 5 s were up (a crash, a power cut, a `restart`).
        assert site_path.read_text() == yaml.safe_dump(bad)
        assert (state / LAST_GOOD).read_text() == good_text
        assert (state / PROBATION).exists(), "stopping is not a verdict"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.cli.main", "run", "-c", str(site_path), "--state-dir",
            str(state), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            # The pushed file is loaded again and fails again: rolled back, and
            # last-good was never overwritten with it.
            await async_wait_until(lambda: any("rollback" in s and s["status"] == "online"
                                               for s in payloads(col.messages, "/state")),
                                   60, "the rollback after the restart")
            assert site_path.read_text() == good_text
            assert (state / LAST_GOOD).read_text() == good_text
            assert not (state / PROBATION).exists()
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


async def test_new_gateway_id_moves_the_command_topic(broker: Broker, tmp_path: Path) -> None:
    async with running_agent(broker, tmp_path, devices=[]) as gw, gw.client() as rc:
        reply = await rc.call("config.apply", {"yaml": gw.site_text(devices=[], gateway="gw-9")})
        assert reply["ok"], reply
        await async_wait_until(lambda: not gw.agent.lifecycle.pending, 30, "the push confirmed")
        async with gw.client(gateway="gw-9") as moved:
            # The reply to config.apply goes out before the uplink reconnects
            # with the new id: a ping sent before that reconnect reaches no
            # subscriber and is lost (QoS 1 to nobody). Ask until it answers.
            deadline = time.monotonic() + 60
            while True:
                try:
                    pong = await moved.call("ping", wait=5)
                    break
                except RemoteTimeout:
                    assert time.monotonic() < deadline, "gw-9 never answered a ping"
            assert pong["ok"], pong
            got = await moved.call("config.get")
            assert "id: gw-9" in got["result"]["yaml"]


async def test_unwritable_site_file_changes_nothing(broker: Broker, tmp_path: Path) -> None:
    async with running_agent(broker, tmp_path) as gw, gw.client() as rc:
        before = gw.agent.site.hash
        runner = gw.agent.scheduler.runners["sim-press"]
        # A directory that is not there: unwritable even for root.
        gw.agent.store.site_path = tmp_path / "gone" / "site.yaml"
        new = yaml.safe_load(gw.site_text())
        new["devices"][0]["poll"] = "300ms"
        reply = await rc.call("config.apply", {"yaml": yaml.safe_dump(new)})
        assert reply["ok"] is False, reply
        assert reply["error"].startswith(f"cannot write {tmp_path / 'gone' / 'site.yaml'}")
        assert reply["error"].endswith("nothing changed")
        assert gw.agent.site.hash == before
        assert gw.agent.scheduler.runners["sim-press"] is runner
