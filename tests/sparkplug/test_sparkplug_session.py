"""Sparkplug B session rules against a real Mosquitto and a Modbus simulator.

Every message is decoded with the generated protobuf module; test names
carry the TCK assertion id of the rule where there is one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path

from agent.pipeline.encoders.sparkplug.datatypes import BOOLEAN, FLOAT, INT16, INT64, UINT32, UINT64
from tests.conftest import Broker, async_wait_until
from tests.sparkplug.helpers_sparkplug import (
    DEVICE,
    GROUP,
    NODE,
    SpCollector,
    press,
    running_agent,
    start_sim,
)


def seqs_contiguous(values: list[int]) -> bool:
    return all((b - a) % 256 == 1 for a, b in itertools.pairwise(values))


async def test_tck_id_topics_nbirth_seq_num_births_then_data(broker: Broker, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sim = await start_sim(stack)
        async with SpCollector(broker) as col, \
                running_agent(broker, tmp_path, [press(sim.port)]) as run:
            await async_wait_until(lambda: len(col.of("DDATA", DEVICE)) >= 3, 30, "data")
            nbirth = col.of("NBIRTH")[0]
            # tck-id-topics-nbirth-topic / -mqtt / -seq-num / -bdseq-included
            assert nbirth.topic == f"spBv1.0/{GROUP}/NBIRTH/{NODE}"
            assert (nbirth.qos, nbirth.retain) == (0, False)
            assert nbirth.payload.seq == 0
            bd = nbirth.metric("bdSeq")
            assert bd.datatype == INT64 and bd.long_value == 0, "first connect ever: bdSeq 0"
            rebirth = nbirth.metric("Node Control/Rebirth")
            assert rebirth.datatype == BOOLEAN and rebirth.boolean_value is False
            # tck-id-topics-dbirth-topic, -seq-num: right after the NBIRTH
            dbirth = col.of("DBIRTH", DEVICE)[0]
            assert dbirth.topic == f"spBv1.0/{GROUP}/DBIRTH/{NODE}/{DEVICE}"
            assert (dbirth.qos, dbirth.retain) == (0, False)
            assert dbirth.payload.seq == 1
            by_name = {m.name: m for m in dbirth.payload.metrics}
            assert set(by_name) == {"oil_temp", "cycles", "running", "alarm", "setpoint"}
            assert {n: m.datatype for n, m in by_name.items()} == {
                "oil_temp": FLOAT, "cycles": UINT32, "running": BOOLEAN, "alarm": BOOLEAN,
                "setpoint": INT16}
            # tck-id-payloads-alias-uniqueness, -alias-birth-requirement
            aliases = [m.alias for m in dbirth.payload.metrics]
            assert len(set(aliases)) == len(aliases) and all(a > 4 for a in aliases)
            assert all(m.timestamp > 0 for m in dbirth.payload.metrics)
            oil = by_name["oil_temp"]
            assert list(oil.properties.keys) == ["engUnit"]
            assert oil.properties.values[0].string_value == "degC"
            assert by_name["setpoint"].int_value == 250
            # tck-id-payloads-alias-data-cmd-requirement, -name-birth-data-requirement:
            # data is alias-only, every metric with its reading's timestamp.
            for msg in col.of("DDATA", DEVICE):
                assert (msg.qos, msg.retain) == (1, False)  # QoS 1: see README
                for m in msg.payload.metrics:
                    assert not m.name and m.alias in aliases and m.timestamp > 0
            # tck-id-topics-ddata-seq-num: one seq across all node messages, +1 each.
            seq = [m.payload.seq for m in col.node_messages()]
            assert seq[0] == 0 and seqs_contiguous(seq), seq
            # Item 5: the buffer's loss accounting rides in node metrics (NBIRTH, then NDATA).
            dropped = nbirth.metric("Buffer/Batches Dropped")
            assert dropped.datatype == UINT64 and dropped.long_value == 0
            run.agent.buffer.stats.dropped_batches += 3  # as the buffer's limits would
            await async_wait_until(lambda: col.of("NDATA"), 30, "NDATA with the drops")
            ndata = col.of("NDATA")[0]
            assert next((m.alias, m.long_value) for m in ndata.payload.metrics) == (
                dropped.alias, 3)
            assert not ndata.payload.metrics[0].name


async def test_management_topics_beside_sparkplug(broker: Broker, tmp_path: Path) -> None:
    from agent.cli.remote.client import BrokerOptions, RemoteClient  # the operator's side

    async with contextlib.AsyncExitStack() as stack:
        sim = await start_sim(stack)
        async with SpCollector(broker, topics=("m2m/#",)) as col, \
                running_agent(broker, tmp_path, [press(sim.port)]):
            await async_wait_until(
                lambda: any(m.topic == f"m2m/{GROUP}/{NODE}/state"
                            for m in col.messages), 30, "retained JSON state")
            state = next(json.loads(m.raw) for m in col.messages if m.topic.endswith("/state"))
            assert state["status"] == "online"
            async with RemoteClient(BrokerOptions(url=broker.url), site=GROUP, gateway=NODE) as rc:
                reply = await rc.call("ping", wait=20)
            assert reply["ok"] is True


async def test_tck_id_message_flow_edge_node_ncmd_subscribe_before_nbirth(tmp_path: Path) -> None:
    """The broker's own log shows SUBSCRIBE (NCMD, DCMD, STATE) before the NBIRTH PUBLISH."""
    from tests.conftest import Broker as Mosquitto

    broker = Mosquitto(tmp_path, extra_conf="log_type all\n")
    broker.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            sim = await start_sim(stack)
            async with SpCollector(broker) as col, running_agent(
                    broker, tmp_path, [press(sim.port)], sparkplug={"primary_host": "h1"}):
                from tests.sparkplug.helpers_sparkplug import publish

                await publish(broker, "spBv1.0/STATE/h1", b'{"online": true, "timestamp": 1}',
                              retain=True)
                await async_wait_until(lambda: col.of("DBIRTH"), 30, "births")
        log = (tmp_path / "mosquitto.log").read_text()
        lines = log.splitlines()
        nbirth = next(i for i, line in enumerate(lines)
                      if f"Received PUBLISH from {NODE}" in line and "NBIRTH" in line)
        before = "\n".join(lines[:nbirth])
        for topic in (f"spBv1.0/{GROUP}/NCMD/{NODE}", f"spBv1.0/{GROUP}/DCMD/{NODE}/+",
                      "spBv1.0/STATE/h1"):
            assert f"{topic} (QoS 1)" in before, f"no SUBSCRIBE to {topic} before the NBIRTH"
    finally:
        broker.stop()


async def test_tck_id_topics_ddata_mqtt_with_data_qos_0(broker: Broker, tmp_path: Path) -> None:
    """``data_qos: 0`` is what the specification asks for data: the TCK's assertion passes."""
    async with contextlib.AsyncExitStack() as stack:
        sim = await start_sim(stack)
        async with SpCollector(broker) as col, running_agent(
                broker, tmp_path, [press(sim.port)], sparkplug={"data_qos": 0}) as run:
            await async_wait_until(lambda: len(col.of("DDATA", DEVICE)) >= 3, 30, "data")
            assert {(m.qos, m.retain) for m in col.of("DDATA")} == {(0, False)}
            # Batches still leave the buffer once handed to the broker connection.
            await async_wait_until(lambda: run.agent.buffer.stats.batches <= 2, 30, "drained")
