"""Primary host STATE gating, NDEATH on host offline, and the historical replay."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path

from agent.sdk.readings import Sample
from tests.conftest import Broker, async_wait_until
from tests.sparkplug.helpers_sparkplug import (
    DEVICE,
    Msg,
    SpCollector,
    press,
    publish,
    running_agent,
    start_sim,
)

HOST = "scada-1"
STATE = f"spBv1.0/STATE/{HOST}"


BACKLOG_BATCHES = 200


def latency(msg: Msg) -> float:
    """ms from the newest reading in a DDATA to its arrival at the subscriber."""
    return float(msg.at * 1000 - max(m.timestamp for m in msg.payload.metrics))


def state(online: bool, ts: int) -> bytes:
    return json.dumps({"online": online, "timestamp": ts}).encode()


async def test_tck_id_message_flow_edge_node_birth_publish_phid_wait_and_history(
    broker: Broker, tmp_path: Path
) -> None:
    t0 = int(time.time() * 1000)
    async with contextlib.AsyncExitStack() as stack:
        sim = await start_sim(stack)
        async with SpCollector(broker) as col, \
                running_agent(broker, tmp_path, [press(sim.port)],
                              sparkplug={"primary_host": HOST}, max_inflight=4) as run:
            agent = run.agent
            # Connected, reading, buffering: but no birth while the host is not online.
            await async_wait_until(lambda: agent.buffer.stats.batches >= 5, 30, "buffering")
            assert not col.of("NBIRTH") and not col.of("DDATA")

            # tck-id-message-flow-edge-node-birth-publish-phid-wait-online
            await publish(broker, STATE, state(True, t0 + 1), retain=True)
            await async_wait_until(lambda: len(col.of("DDATA")) >= 15, 30, "data once online")
            assert col.of("NBIRTH")[0].metric("bdSeq").long_value == 0
            baseline = [latency(m) for m in col.of("DDATA")[-10:]]

            # tck-id-message-flow-edge-node-birth-publish-phid-offline: NDEATH, reconnect, wait.
            await publish(broker, STATE, state(False, t0 + 2), retain=True)
            await async_wait_until(lambda: col.of("NDEATH"), 30, "NDEATH")
            assert col.of("NDEATH")[0].metric("bdSeq").long_value == 0
            await async_wait_until(lambda: agent.uplink.counters.reconnects >= 2, 30, "reconnect")
            before = len(col.messages)
            # An hour-long outage's worth of stored batches (100 samples each).
            start = t0 - 3_600_000
            for k in range(BACKLOG_BATCHES):
                agent.buffer.add(DEVICE, [Sample(start + (k * 100 + i) * 100, {
                    "oil_temp": 60.0 + i / 10, "cycles": k * 100 + i, "running": True,
                    "alarm": False, "setpoint": 250}) for i in range(100)])
                await agent.buffer.commit()
            await async_wait_until(lambda: agent.buffer.stats.batches >= BACKLOG_BATCHES, 60,
                                   "a backlog")
            assert not [m for m in col.messages[before:] if m.kind in ("NBIRTH", "DDATA")], \
                "nothing published while the host is offline"

            # A stale retained STATE (older timestamp) never wins.
            await publish(broker, STATE, state(True, t0), retain=True)
            await async_wait_until(lambda: agent.uplink.node.host.bad_messages == 0 and
                                   agent.buffer.stats.batches >= BACKLOG_BATCHES + 5, 30,
                                   "time for the stale STATE to arrive")
            assert agent.uplink.node.host.timestamp == t0 + 2
            assert len(col.of("NBIRTH")) == 1

            # The host returns: births (bdSeq + 1), live data at once, the backlog as history.
            mark = len(col.messages)
            await publish(broker, STATE, state(True, t0 + 3), retain=True)
            await async_wait_until(lambda: len(col.of("NBIRTH")) == 2, 30, "births again")
            assert col.of("NBIRTH")[1].metric("bdSeq").long_value == 1
            node = agent.uplink.node
            # Drained: all history sent, only live batches (a commit or two) left in flight.
            await async_wait_until(lambda: node.stats["history_batches"] >= BACKLOG_BATCHES
                                   and agent.buffer.stats.batches <= 3, 60, "backlog drained")
            after = [m for m in col.messages[mark:] if m.kind == "DDATA" and m.device == DEVICE]
            history = [m for m in after if m.payload.metrics[0].is_historical]
            live = [m for m in after if not m.payload.metrics[0].is_historical]
            assert history and live
            for msg in after:
                flags = {m.is_historical for m in msg.payload.metrics}
                assert len(flags) == 1, "history and live values never share a payload"
            # History keeps its original timestamps: older than the births.
            birth_ts = col.of("NBIRTH")[1].payload.timestamp
            assert all(m.timestamp < birth_ts for msg in history for m in msg.payload.metrics)
            # Live data during the replay is not held up behind it.
            replay_end = max(m.at for m in history)
            during = [m for m in live if m.at <= replay_end]
            lat = [latency(m) for m in during]
            print(f"history {len(history)} live {len(live)} during {len(during)} "
                  f"replay {replay_end - history[0].at:.2f}s baseline {baseline} lat {lat}")
            assert during, "live data waited for the whole replay"
            # Without a backlog a reading waits up to a poll and a commit window
            # (100 ms each here) plus the network: the baseline. A replay that
            # held live data up would add whole seconds (the replay's length).
            bound = max(statistics.median(baseline), 200) + 300
            assert statistics.median(lat) < bound, (baseline, lat)
            assert max(lat) < 2000, lat
