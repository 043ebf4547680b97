"""A simulated OPC UA server with changing values, for ``edge-agent demo``.

``start_server`` is also what the tests and the benchmark run against: a
real asyncua server in this process, on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = ["NS_URI", "SimServer", "free_port", "simulate", "start_server"]

NS_URI = "urn:edge-agent:demo"
VT = ua.VariantType

# name -> (built-in type, initial value); the updater changes the numeric ones.
DEMO_VARIABLES: dict[str, tuple[ua.VariantType, Any]] = {
    "Line1.Speed": (VT.Double, 0.0),
    "Line1.Temperature": (VT.Float, 20.0),
    "Line1.Count": (VT.UInt32, 0),
    "Line1.Running": (VT.Boolean, True),
    "Line1.Mode": (VT.String, "auto"),
    "Line1.Setpoint": (VT.Int16, 100),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Users:
    """Username/password check for the simulated server (no anonymous)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class SimServer:
    server: Server
    port: int
    endpoint: str
    ns: int
    nodes: dict[str, Node] = field(default_factory=dict)
    certificate: Path | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def set(self, name: str, value: Any, vtype: ua.VariantType,
                  status: int = StatusCodes.Good, ts: datetime | None = None) -> None:
        """Change a value (and its status) the way a device would."""
        now = ts or datetime.now(UTC)
        dv = ua.DataValue(ua.Variant(value, vtype), StatusCode=ua.StatusCode(status),  # type: ignore[arg-type]
                          SourceTimestamp=now, ServerTimestamp=now)  # type: ignore[arg-type]
        await self.server.write_attribute_value(self.nodes[name].nodeid, dv)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop()


async def start_server(
    port: int | None = None,
    *,
    variables: dict[str, tuple[ua.VariantType, Any]] | None = None,
    namespaces: Sequence[str] = (NS_URI,),
    users: dict[str, str] | None = None,
    cert_dir: Path | None = None,
    app_uri: str = "urn:edge-agent:simulator",
) -> SimServer:
    """Start a server; variables go into the *last* of ``namespaces`` (the
    ones before it only shift its index, as a reordered server would)."""
    port = port or free_port()
    server = Server(user_manager=_Users(users) if users else None)  # type: ignore[arg-type]
    await server.init()
    server.disable_clock()  # nobody needs the 1 s CurrentTime writes
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_server_name("edge-agent simulator")
    await server.set_application_uri(app_uri)
    if users:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    cert = None
    if cert_dir is not None:
        cert, key = cert_dir / "server_cert.der", cert_dir / "server_key.pem"
        await asyncio.to_thread(cert_dir.mkdir, parents=True, exist_ok=True)
        await setup_self_signed_certificate(
            key, cert, app_uri, "127.0.0.1",
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], {})
        await server.load_certificate(cert)
        await server.load_private_key(key)
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = 0
    for uri in namespaces:
        ns = await server.register_namespace(uri)
    folder = await server.nodes.objects.add_folder(
        ua.NodeId("Plant", ns), ua.QualifiedName("Plant", ns))  # type: ignore[arg-type]
    sim = SimServer(server=server, port=port, endpoint=f"opc.tcp://127.0.0.1:{port}/", ns=ns,
                    certificate=cert)
    for name, (vtype, value) in (variables or DEMO_VARIABLES).items():
        node = await folder.add_variable(
            ua.NodeId(name, ns), ua.QualifiedName(name, ns),  # type: ignore[arg-type]
            ua.Variant(value, vtype), datatype=ua.NodeId(int(vtype)))  # type: ignore[arg-type]
        await node.set_writable()
        sim.nodes[name] = node
    await server.start()
    return sim


async def _animate(sim: SimServer, period: float) -> None:
    # Values a demo viewer recognises: a sine speed, a drifting temperature,
    # a counter, a run flag that toggles every 30 s.
    start = time.monotonic()
    while True:
        t = time.monotonic() - start
        await sim.set("Line1.Speed", round(50 + 20 * math.sin(t / 5), 3), VT.Double)
        await sim.set("Line1.Temperature", 20 + 5 * math.sin(t / 60), VT.Float)
        await sim.set("Line1.Count", int(t / period), VT.UInt32)
        await sim.set("Line1.Running", int(t / 30) % 2 == 0, VT.Boolean)
        await asyncio.sleep(period)


async def simulate(stack: contextlib.AsyncExitStack, workdir: Path) -> list[dict[str, Any]]:
    """Start the demo server; return its device entry for the site YAML."""
    sim = await start_server()
    stack.push_async_callback(sim.stop)
    sim._tasks.append(asyncio.create_task(_animate(sim, 0.5), name="opcua-simulator"))
    tags: list[dict[str, Any]] = [
        {"name": name.split(".", 1)[1].lower(), "node": f"nsu={NS_URI};s={name}"}
        for name in DEMO_VARIABLES
    ]
    tags[-1].update(writable=True, min=0, max=500)
    return [{
        "name": "opcua-line1",
        "driver": "opcua",
        "connection": {"endpoint": sim.endpoint},
        "mode": "subscribe",
        "interval": "500ms",
        "tags": tags,
    }]
