"""Every command against a running agent, a real Mosquitto and a Modbus simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiomqtt

from drivers.modbus.simulator import simulate
from tests.conftest import Broker, Collector, async_wait_until, fast
from tests.management.conftest import BASE, Running, payloads, running_agent


async def test_ping_status_config_get_buffer_stats(gateway: Running) -> None:
    async with gateway.client() as rc:
        pong = await rc.call("ping")
        assert pong["ok"] is True and pong["result"]["pong"] is True
        assert isinstance(pong["result"]["ts"], int)

        await async_wait_until(lambda: gateway.agent.latest.get("sim-press") is not None, 30,
                               "a first reading")
        status = (await rc.call("status"))["result"]
        assert status["status"] == "online"
        assert status["config_hash"] == gateway.agent.site.hash
        assert status["devices"]["sim-press"]["polls"] >= 1
        assert set(status["latest"]["sim-press"]["values"]) == {
            "oil_temp", "cycles", "running", "alarm", "setpoint"}
        assert status["uplink"]["connected"] is True
        assert status["memory"]["rss_bytes"] > 0

        got = (await rc.call("config.get"))["result"]
        assert got["yaml"] == gateway.agent.site.text == gateway.site_path.read_text()
        assert got["hash"] == gateway.agent.site.hash

        stats = (await rc.call("buffer.stats"))["result"]
        assert {"depth", "bytes", "oldest_age_s", "dropped_batches"} <= set(stats)


async def test_read_all_some_and_errors(gateway: Running) -> None:
    async with gateway.client() as rc:
        await async_wait_until(lambda: gateway.agent.scheduler.runners["sim-press"]
                               .counters.connected, 30, "device connected")
        every = await rc.call("read", {"device": "sim-press"})
        assert every["ok"], every
        sample = every["result"]["samples"][0]
        assert sample["values"]["setpoint"] == 250
        assert isinstance(sample["ts"], int) and "bad" not in sample

        some = await rc.call("read", {"device": "sim-press", "tags": ["cycles", "running"]})
        assert set(some["result"]["samples"][0]["values"]) == {"cycles", "running"}

        cases: list[tuple[dict[str, Any], str]] = [
            ({"device": "nope"}, "no device 'nope'; devices: sim-press"),
            ({"device": "sim-press", "tags": ["ghost"]}, "no tag(s) ghost"),
            ({"device": "sim-press", "tags": "cycles"}, "list of tag names"),
            ({}, "needs \"device\""),
            ({"device": "sim-press", "colour": 1}, "unknown argument(s) colour"),
        ]
        for args, needle in cases:
            reply = await rc.call("read", args)
            assert reply["ok"] is False and needle in reply["error"], (args, reply)


async def test_write_is_guarded_and_read_back(gateway: Running, caplog: object) -> None:
    async with gateway.client() as rc:
        await async_wait_until(lambda: gateway.agent.scheduler.runners["sim-press"]
                               .counters.connected, 30, "device connected")
        ok = await rc.call("write", {"device": "sim-press", "tag": "setpoint", "value": 321})
        assert ok == {"id": ok["id"], "ok": True,
                      "result": {"device": "sim-press", "tag": "setpoint", "value": 321}}
        again = await rc.call("read", {"device": "sim-press", "tags": ["setpoint"]})
        assert again["result"]["samples"][0]["values"]["setpoint"] == 321

        writes: list[tuple[dict[str, Any], str]] = [
            ({"device": "sim-press", "tag": "setpoint", "value": 501}, "above max 500"),
            ({"device": "sim-press", "tag": "setpoint", "value": -1}, "below min 0"),
            ({"device": "sim-press", "tag": "cycles", "value": 1}, "not writable"),
            ({"device": "sim-press", "tag": "ghost", "value": 1}, "no tag 'ghost'"),
            ({"device": "sim-press", "tag": "setpoint"}, "write needs \"value\""),
            ({"device": "sim-press", "tag": "setpoint", "value": "hot"}, "not a number"),
        ]
        for args, needle in writes:
            reply = await rc.call("write", args)
            assert reply["ok"] is False and needle in reply["error"], (args, reply)
        still = await rc.call("read", {"device": "sim-press", "tags": ["setpoint"]})
        assert still["result"]["samples"][0]["values"]["setpoint"] == 321


async def test_write_is_audited_with_the_command_id(gateway: Running) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    audit = logging.getLogger("agent.audit")
    handler = Keep()
    audit.addHandler(handler)
    old_level = audit.level
    audit.setLevel(logging.INFO)
    try:
        async with gateway.client() as rc:
            await async_wait_until(lambda: gateway.agent.scheduler.runners["sim-press"]
                                   .counters.connected, 30, "device connected")
            reply = await rc.call("write", {"device": "sim-press", "tag": "setpoint", "value": 7})
            assert reply["ok"], reply
    finally:
        audit.removeHandler(handler)
        audit.setLevel(old_level)
    assert any(f"remote:{reply['id']}" in r.getMessage() and "ok" in r.getMessage()
               for r in records)


async def test_log_level_changes_and_refuses_unknown(gateway: Running) -> None:
    root = logging.getLogger()
    before = root.level
    try:
        async with gateway.client() as rc:
            ok = await rc.call("log_level", {"level": "debug"})
            assert ok["ok"] and root.level == logging.DEBUG
            one = await rc.call("log_level", {"level": "error", "logger": "pymodbus"})
            assert one["ok"] and logging.getLogger("pymodbus").level == logging.ERROR
            bad = await rc.call("log_level", {"level": "loud"})
            assert bad["ok"] is False and "unknown log level 'loud'" in bad["error"]
            assert root.level == logging.DEBUG
    finally:
        root.setLevel(before)
        logging.getLogger("pymodbus").setLevel(logging.NOTSET)


async def test_restart_replies_then_stops(gateway: Running) -> None:
    async with gateway.client() as rc:
        reply = await rc.call("restart")
    assert reply["ok"] and reply["result"] == {"restarting": True}
    await asyncio.wait_for(asyncio.shield(gateway.task), 30)


async def test_malformed_and_unknown_get_error_replies(gateway: Running) -> None:
    async with gateway.client() as rc:
        cases: list[tuple[str, bytes, str]] = [
            ("ping", b"{not json", "not JSON"),
            ("ping", b"[1, 2]", "expected a JSON object"),
            ("ping", b"\xff\xfe", "not UTF-8"),
            ("ping", b'{"args": {}}', "\"id\" must be a non-empty string"),
            ("ping", b'{"id": 5}', "\"id\" must be a non-empty string"),
            ("ping", b'{"id": "' + b"x" * 200 + b'"}', "longer than 128"),
            ("read", b'{"id": "r1", "args": [1]}', "\"args\" must be an object"),
            ("self_destruct", b'{"id": "u1"}', "unknown command 'self_destruct'"),
            ("ping", b'{"id": "p1", "args": {"x": 1}}', "unknown argument(s) x"),
        ]
        for i, (command, payload, needle) in enumerate(cases):
            # Malformed requests may carry no usable id: the correlation data
            # still routes the reply, and its "id" is then null.
            reply = await rc.send_raw(command, payload, f"corr-{i}", 10)
            assert reply["ok"] is False and needle in reply["error"], (command, payload, reply)
        # And the agent is still fine.
        assert (await rc.call("ping"))["ok"]
    assert not gateway.task.done()


async def test_reply_topic_without_response_topic(gateway: Running, broker: Broker) -> None:
    async with Collector(broker, f"{BASE}/reply", "reply-watch") as col, \
            aiomqtt.Client("127.0.0.1", broker.port) as plain:  # MQTT 3.1.1: no properties
        await plain.publish(f"{BASE}/cmd/ping", json.dumps({"id": "plain-1"}), qos=1)
        await async_wait_until(lambda: payloads(col.messages, "/reply"), 30, "reply")
        reply = payloads(col.messages, "/reply")[0]
        assert reply["id"] == "plain-1" and reply["ok"] is True


async def test_response_topic_and_correlation_data_take_precedence(
        gateway: Running, broker: Broker) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    async with Collector(broker, f"{BASE}/#", "reply-watch-2") as col, \
            aiomqtt.Client("127.0.0.1", broker.port,
                           protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(f"{BASE}/reply/mine", qos=1)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = f"{BASE}/reply/mine"
        props.CorrelationData = b"\x00corr\xff"
        await c.publish(f"{BASE}/cmd/ping", json.dumps({"id": "v5-1"}), qos=1, properties=props)
        async with asyncio.timeout(30):
            msg = await anext(aiter(c.messages))
        assert str(msg.topic) == f"{BASE}/reply/mine"
        assert getattr(msg.properties, "CorrelationData", None) == b"\x00corr\xff"
        assert isinstance(msg.payload, bytes) and json.loads(msg.payload)["id"] == "v5-1"
        # Nothing went to the plain reply topic.
        assert not [t for t, _, _ in col.messages if t == f"{BASE}/reply"]


async def _delaying_proxy(upstream_port: int, delay: float) -> asyncio.Server:
    """A TCP proxy that holds every answer of the real device for ``delay`` seconds."""

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, hold: float) -> None:
        while data := await src.read(4096):
            if hold:
                await asyncio.sleep(hold)  # the slowness under test, not synchronisation
            dst.write(data)
            await dst.drain()
        dst.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pump(reader, up_writer, 0.0), pump(up_reader, writer, delay),
                             return_exceptions=True)

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_slow_device_read_does_not_block_ping(broker: Broker, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sim = fast(await simulate(stack, tmp_path), poll="2s")[0]
        proxy = await _delaying_proxy(sim["connection"]["port"], 1.0)
        stack.callback(proxy.close)
        port = proxy.sockets[0].getsockname()[1]
        sim["connection"] = {**sim["connection"], "port": port, "timeout": "5s"}
        # One register: each read is one request, held back 1 s by the proxy.
        sim["tags"] = [t for t in sim["tags"] if t["name"] == "setpoint"]
        async with running_agent(broker, tmp_path, devices=[sim]) as gw, gw.client() as rc:
            runner = gw.agent.scheduler.runners["sim-press"]
            await async_wait_until(lambda: runner.counters.polls >= 1, 30, "a slow poll")
            slow = asyncio.create_task(rc.call("read", {"device": "sim-press"}, wait=30))
            # Messages of one client arrive in order: the read's handler is
            # already waiting on the device when the ping's starts.
            t0 = time.perf_counter()
            pong = await rc.call("ping")
            elapsed = time.perf_counter() - t0
            assert pong["ok"]
            assert not slow.done(), "the slow read should still be waiting"
            assert elapsed < 0.8, f"ping took {elapsed:.2f}s behind a slow read"
            reply = await slow
            assert reply["ok"] is True, reply
            assert reply["result"]["samples"][0]["values"]["setpoint"] == 250


async def test_replies_are_not_held_back_by_nagle(gateway: Running) -> None:
    import socket

    # Small replies right after a PUBACK: without TCP_NODELAY they wait for a
    # delayed ACK (40 ms), close to the 50 ms ping budget on its own.
    paho = gateway.agent.uplink._client._client  # type: ignore[union-attr]
    sock = paho.socket()
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    async with gateway.client() as rc:
        assert rc._client is not None
        mine = rc._client._client.socket()
        assert isinstance(mine, socket.socket)
        assert mine.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
