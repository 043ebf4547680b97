"""``edge-agent browse ENDPOINT``: print a ``tags:`` block to paste into a site file.

Registered through the ``edge_agent.commands`` entry point; imports asyncua
only when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from drivers.opcua.options import SECURITY_CHOICES, OpcuaConnection

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "browse", help="walk an OPC UA server and print a ready-to-paste tags: block",
        description="Walk an OPC UA server's address space and print its variables as a "
                    "tags: block in nsu= form (survives namespace reordering).")
    p.add_argument("endpoint", help="opc.tcp://host:4840[/path]")
    p.add_argument("--root", default="i=85", help="node to start from (default i=85, Objects)")
    p.add_argument("--depth", type=int, default=4, help="levels below the root (default 4)")
    p.add_argument("--security", choices=SECURITY_CHOICES, default="None")
    p.add_argument("--username", help="user name (default anonymous)")
    p.add_argument("--password-env", metavar="NAME",
                   help="environment variable holding the password (asked for if unset)")
    p.add_argument("--server-certificate", type=Path, metavar="PATH",
                   help="pinned server certificate (DER or PEM)")
    p.add_argument("--trust-on-first-use", action="store_true",
                   help="pin the certificate the server shows now (recorded in the state dir)")
    p.add_argument("--state-dir", type=Path,
                   help="client certificate and pins (default: $STATE_DIRECTORY, "
                        "else /var/lib/edge-agent)")
    p.add_argument("--timeout", type=float, default=10.0, help="request timeout, s (default 10)")
    p.set_defaults(func=run)


def _state_dir(arg: Path | None) -> Path:
    return arg or Path(os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/edge-agent")


def _connection(args: argparse.Namespace) -> OpcuaConnection:
    password = None
    if args.username:
        if args.password_env:
            if args.password_env not in os.environ:
                raise ValueError(f"environment variable {args.password_env} is not set")
            password = os.environ[args.password_env]
        else:
            password = getpass.getpass(f"password for {args.username}: ")
    return OpcuaConnection(
        endpoint=args.endpoint, security=args.security, username=args.username,
        password=SecretStr(password) if password is not None else None,
        server_certificate=args.server_certificate,
        trust_on_first_use=args.trust_on_first_use, timeout=args.timeout,
    )


async def _browse(conn: OpcuaConnection, state_dir: Path, root: str, depth: int) -> str:
    import logging

    from drivers.opcua.browse import browse, render_tags
    from drivers.opcua.driver import to_ua_node
    from drivers.opcua.session import close_client, open_client

    log = logging.getLogger("edge-agent.browse")
    client = await open_client(conn, state_dir=state_dir, log=log, cert_lock=asyncio.Lock())
    try:
        root_node = to_ua_node(root, await client.get_namespace_array())
        variables = await browse(client, root_node, depth)
    finally:
        await close_client(client)
    header = (f"edge-agent browse {conn.endpoint} --root {root} --depth {depth}: "
              f"{len(variables)} variable(s)")
    return render_tags(variables, header)


def run(args: argparse.Namespace) -> int:
    from agent.sdk.driver import DriverError
    from drivers.opcua.nodeid import UnknownNamespace, parse_node

    try:
        parse_node(args.root)
        if args.depth < 1:
            raise ValueError("--depth must be at least 1")
        conn = _connection(args)
    except ValidationError as err:
        for e in err.errors(include_url=False):
            print(f"edge-agent browse: {e['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"edge-agent browse: {err}", file=sys.stderr)
        return 2
    try:
        text = asyncio.run(_browse(conn, _state_dir(args.state_dir), args.root, args.depth))
    except (DriverError, UnknownNamespace) as err:
        print(f"edge-agent browse: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
