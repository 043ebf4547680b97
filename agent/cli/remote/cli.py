"""``edge-agent remote``: send one management command to a gateway and show the reply.

Exit status: 0 ok, 1 the gateway answered with an error, 2 usage, 3 no
reply within ``--timeout``, 4 the broker could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

EXIT_ERROR_REPLY = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_BROKER = 4


def _add_commands(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="remote_command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="every gateway of the site from its retained state")
    sub.add_parser("status", help="state, health, devices and latest readings")
    sub.add_parser("ping", help="round trip to the gateway")
    cfg = sub.add_parser("config", help="get or push the site file")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="get|push")
    cfg_sub.add_parser("get", help="print the running site file")
    push = cfg_sub.add_parser("push", help="show the diff, then validate and apply FILE")
    push.add_argument("file", type=Path)
    push.add_argument("--diff-only", action="store_true", help="show the diff, send nothing")
    r = sub.add_parser("read", help="read tags now through the running driver")
    r.add_argument("device")
    r.add_argument("tags", nargs="*", help="tags to read (all when none)")
    w = sub.add_parser("write", help="one guarded write (writable tags, within bounds)")
    w.add_argument("device")
    w.add_argument("tag")
    w.add_argument("value", help="number, true/false, or text")
    sub.add_parser("restart", help="stop cleanly; systemd starts the agent again")
    lvl = sub.add_parser("log-level", help="change the log level at run time")
    lvl.add_argument("level", choices=["debug", "info", "warning", "error", "critical"])
    lvl.add_argument("--logger", help="only this logger, e.g. pymodbus")
    sub.add_parser("buffer-stats", help="buffer depth, bytes, oldest age, drops")


def register(subparsers: Any) -> None:
    """Entry point ``edge_agent.commands: remote``."""
    p = subparsers.add_parser(
        "remote", help="remote management of gateways over MQTT",
        description="Send one command to a gateway over MQTT and wait for its reply.")
    p.add_argument("--broker", required=True, help="mqtt://host[:port] or mqtts://host[:port]")
    p.add_argument("--ca", help="CA bundle to verify the broker (mqtts)")
    p.add_argument("--cert", help="client certificate (PEM)")
    p.add_argument("--key", help="client private key (PEM)")
    p.add_argument("--user", help="broker username")
    p.add_argument("--password-file", type=Path, help="file holding the broker password")
    p.add_argument("--protocol", choices=["auto", "5", "3.1.1"], default="auto",
                   help="MQTT version (auto: 5, or 3.1.1 when the broker refuses 5)")
    p.add_argument("--site", required=True)
    p.add_argument("--gateway", help="gateway id (every command but list)")
    p.add_argument("--prefix", default="m2m", help="uplink.mqtt.topic_prefix (%(default)s)")
    p.add_argument("--key-file", type=Path, help="management.command_key: sign commands with it")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")
    p.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    _add_commands(p)
    p.set_defaults(func=run)


def _secret_file(path: Path) -> str:
    # Same rule as ${file:...} on the gateway: a trailing newline is not part of it.
    return path.read_text(encoding="utf-8").rstrip("\r\n")


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    from agent.cli.commission import parse_value

    match args.remote_command:
        case "read":
            return "read", {"device": args.device, **({"tags": args.tags} if args.tags else {})}
        case "write":
            return "write", {"device": args.device, "tag": args.tag,
                             "value": parse_value(args.value)}
        case "log-level":
            return "log_level", {"level": args.level,
                                 **({"logger": args.logger} if args.logger else {})}
        case "buffer-stats":
            return "buffer.stats", {}
        case "config":
            return "config.get", {}
        case other:
            return str(other), {}


def _show(args: argparse.Namespace, command: str, result: Any) -> None:
    from agent.cli.remote.render import sample_table, status_text

    if args.json:
        print(json.dumps(result, indent=2))
    elif command == "read":
        print(sample_table(result.get("samples", [])))
    elif command == "status":
        print(status_text(result))
    elif command == "config.get":
        print(result.get("yaml", ""), end="")
    elif command == "write":
        print(f"{result['device']}.{result['tag']} = {json.dumps(result['value'])} (read back)")
    else:
        print(json.dumps(result, indent=2))


def _fail_reply(args: argparse.Namespace, reply: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(reply, indent=2))
    print(f"edge-agent remote: {args.gateway}: error:\n{reply.get('error')}", file=sys.stderr)
    return EXIT_ERROR_REPLY


async def _push(args: argparse.Namespace, rc: Any) -> int:
    from agent.cli.remote.render import config_diff

    text = args.file.read_text(encoding="utf-8")
    current = await rc.call("config.get", wait=args.timeout)
    if not current.get("ok"):
        return _fail_reply(args, current)
    diff = config_diff(current["result"]["yaml"], text, name=str(args.file))
    print(diff or "no change against the running config", end="" if diff else "\n")
    if args.diff_only:
        return 0
    reply = await rc.call("config.apply", {"yaml": text}, wait=args.timeout)
    if not reply.get("ok"):
        print(f"edge-agent remote: {args.gateway} rejected {args.file}:", file=sys.stderr)
        return _fail_reply(args, reply)
    print(json.dumps(reply["result"], indent=2))
    return 0


async def _main(args: argparse.Namespace) -> int:
    from agent.cli.remote.client import BrokerOptions, RemoteClient, gateway_states
    from agent.cli.remote.render import gateway_table

    broker = BrokerOptions(
        url=args.broker, username=args.user,
        password=_secret_file(args.password_file) if args.password_file else None,
        ca=args.ca, cert=args.cert, key=args.key, protocol=args.protocol)
    if args.remote_command == "list":
        states = await gateway_states(broker, site=args.site, prefix=args.prefix,
                                      wait=args.timeout)
        print(json.dumps(states, indent=2) if args.json else gateway_table(states))
        return 0
    key = _secret_file(args.key_file).encode() if args.key_file else None
    async with RemoteClient(broker, site=args.site, gateway=args.gateway, prefix=args.prefix,
                            key=key) as rc:
        if args.remote_command == "config" and args.config_command == "push":
            return await _push(args, rc)
        command, cmd_args = _request(args)
        reply = await rc.call(command, cmd_args, wait=args.timeout)
    if not reply.get("ok"):
        return _fail_reply(args, reply)
    _show(args, command, reply.get("result"))
    return 0


def run(args: argparse.Namespace) -> int:
    import aiomqtt

    from agent.cli.remote.client import RemoteTimeout

    if args.remote_command != "list" and not args.gateway:
        print("edge-agent remote: --gateway is needed for this command", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_main(args))
    except RemoteTimeout as err:
        print(f"edge-agent remote: {err}", file=sys.stderr)
        return EXIT_TIMEOUT
    except aiomqtt.MqttError as err:
        print(f"edge-agent remote: broker {args.broker}: {err}", file=sys.stderr)
        return EXIT_BROKER
    except (OSError, ValueError) as err:
        print(f"edge-agent remote: {err}", file=sys.stderr)
        return EXIT_USAGE
