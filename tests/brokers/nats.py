"""Private NATS servers with their MQTT listener: one, or a three-node cluster.

Each server gets free loopback ports and its own JetStream store under the
test's temp dir; the machine's own NATS on 4222 is never touched.  NATS
speaks MQTT 3.1.1 only (it refuses MQTT 5), with QoS 0/1, retained
messages and wills kept in JetStream.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, port_open, wait_until

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class Nats:
    def __init__(self, workdir: Path, name: str, cluster_port: int | None = None,
                 routes: tuple[int, ...] = ()) -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()  # the NATS client port (unused by the tests)
        self.mqtt_port = free_port()
        self.conf = self.dir / "nats.conf"
        cluster = ""
        mqtt = f"listen: \"127.0.0.1:{self.mqtt_port}\""
        if cluster_port is not None:
            # Every MQTT stream on all three nodes: one node down keeps a quorum.
            mqtt += ", stream_replicas: 3"
            route_list = ", ".join(f'"nats://127.0.0.1:{p}"' for p in routes)
            cluster = (f"cluster {{ name: edge-test, listen: \"127.0.0.1:{cluster_port}\", "
                       f"routes: [{route_list}] }}\n")
        self.conf.write_text(
            f"server_name: {name}\n"
            f"listen: \"127.0.0.1:{self.port}\"\n"
            f"jetstream {{ store_dir: \"{self.dir / 'js'}\" }}\n"
            f"mqtt {{ {mqtt} }}\n" + cluster)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def start(self, wait: bool = True) -> None:
        if not Path(NATS_SERVER).exists():
            pytest.skip("nats-server is not installed")
        out = open(self.dir / "nats.out", "ab")
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)], stdout=out, stderr=out)
        out.close()
        if wait:
            self.wait_up()

    def wait_up(self) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                text = (self.dir / "nats.out").read_text(errors="replace")
                raise AssertionError(f"nats-server {self.name} exited: {text[-2000:]}")
            return port_open(self.mqtt_port)

        wait_until(up, 30, f"nats {self.name} MQTT on {self.mqtt_port}")

    def kill(self) -> None:
        """SIGKILL: the node vanishes as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def cluster(workdir: Path, n: int = 3) -> list[Nats]:
    """``n`` nodes routed to each other; started, with JetStream meta leader elected."""
    ports = [free_port() for _ in range(n)]
    nodes = [Nats(workdir, f"n{i}", ports[i], tuple(p for p in ports if p != ports[i]))
             for i in range(n)]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_up()
    return nodes


def wait_mqtt_ready(url_port: int, timeout: float = 60.0) -> None:
    """The MQTT listener accepts a session (JetStream assets created): a real CONNECT."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{url_port}",
                        protocol=paho.MQTTv311)
        try:
            c.connect("127.0.0.1", url_port, 5)
            rc = c.loop(timeout=5.0)
            if rc == 0 and c.is_connected():
                c.disconnect()
                return
            last = f"rc {rc}"
        except OSError as err:
            last = str(err)
        finally:
            c.disconnect()
        time.sleep(0.5)
    raise AssertionError(f"NATS MQTT on {url_port} not ready: {last}")


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[Nats]:
    server = Nats(tmp_path, "solo")
    server.start()
    wait_mqtt_ready(server.mqtt_port)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[Nats]]:
    nodes = cluster(tmp_path)
    try:
        for node in nodes:
            wait_mqtt_ready(node.mqtt_port, 90)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
