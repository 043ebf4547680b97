"""bdSeq and the will: kill -9 and clean stops of a real agent process."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.pipeline.encoders.sparkplug.datatypes import INT64
from tests.conftest import Broker, async_wait_until
from tests.sparkplug.helpers_sparkplug import (
    GROUP,
    NODE,
    SpCollector,
    press,
    site_dict,
    start_sim,
)

ROOT = Path(__file__).resolve().parents[2]


def start_agent(site: Path, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli.main", "run", "-c", str(site), "--state-dir", str(state)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(state.parent / "agent.log", "ab"),
    )


def bd_seq(msg_payload: object) -> int:
    metric = next(m for m in msg_payload.metrics if m.name == "bdSeq")  # type: ignore[attr-defined]
    assert metric.datatype == INT64
    return int(metric.long_value)


@pytest.mark.slow
async def test_tck_id_payloads_ndeath_will_message_kill_9_and_next_bdseq(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    site = tmp_path / "site.yaml"
    async with contextlib.AsyncExitStack() as stack:
        sim = await start_sim(stack)
        site.write_text(yaml.safe_dump(site_dict(broker.url, [press(sim.port)])))
        async with SpCollector(broker) as col:
            proc = start_agent(site, state)
            try:
                await async_wait_until(lambda: col.of("DDATA"), 60, "first data")
                born = bd_seq(col.of("NBIRTH")[-1].payload)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                # The broker publishes the will: the NDEATH with the birth's bdSeq.
                await async_wait_until(lambda: col.of("NDEATH"), 30, "the will")
                will = col.of("NDEATH")[0]
                assert will.topic == f"spBv1.0/{GROUP}/NDEATH/{NODE}"
                assert (will.qos, will.retain) == (1, False)
                assert bd_seq(will.payload) == born
                assert not will.payload.HasField("seq"), "an NDEATH has no seq"
                # tck-id-payloads-nbirth-bdseq-repeat: the next NBIRTH has bdSeq + 1.
                proc = start_agent(site, state)
                await async_wait_until(lambda: len(col.of("NBIRTH")) >= 2, 60, "the rebirth")
                assert bd_seq(col.of("NBIRTH")[-1].payload) == (born + 1) % 256
                assert col.of("NBIRTH")[-1].payload.seq == 0
                # tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath:
                # a clean stop publishes the NDEATH (same bdSeq) before DISCONNECT.
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) == 0
                await async_wait_until(lambda: len(col.of("NDEATH")) >= 2, 30, "clean NDEATH")
                assert bd_seq(col.of("NDEATH")[-1].payload) == (born + 1) % 256
                assert (state / "sparkplug_bdseq").read_text().strip() == str((born + 1) % 256)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


async def test_tck_id_message_flow_edge_node_birth_publish_will_message_bdseq_per_attempt(
    tmp_path: Path,
) -> None:
    """Every connect attempt, failed or not, takes the next bdSeq (0-255, wrapping)."""
    from agent.pipeline.encoders.sparkplug import sparkplug_b_pb2 as pb
    from agent.pipeline.sparkplug.bdseq import BdSeqStore

    store = BdSeqStore(tmp_path / "sparkplug_bdseq")
    assert [store.next() for _ in range(3)] == [0, 1, 2]
    (tmp_path / "sparkplug_bdseq").write_text("255\n")
    assert BdSeqStore(tmp_path / "sparkplug_bdseq").next() == 0
    assert pb.Payload is not None
