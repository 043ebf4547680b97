"""``edge-agent``: the command line of SPEC.md.

Each sub-command imports what it needs when it runs, so ``check`` stays
fast and a Modbus-only gateway never imports OPC UA.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__

__all__ = ["main"]

DEFAULT_CONFIG = "/etc/edge-agent/site.yaml"
COMMANDS_GROUP = "edge_agent.commands"

log = logging.getLogger("agent.cli")


def _state_dir(arg: str | None) -> Path:
    from agent.config.store import default_state_dir

    return Path(arg) if arg else default_state_dir()


def cmd_check(args: argparse.Namespace) -> int:
    from agent.config.load import ConfigErrors, load_site

    try:
        site = load_site(args.config, keep=False)  # the verdict only: nothing is kept
    except ConfigErrors as err:
        print(err.render(), file=sys.stderr)
        print(f"{args.config}: {len(err.problems)} problem(s)", file=sys.stderr)
        return 1
    for line in site.warnings:
        print(f"{args.config}: {line}")
    print(f"{args.config}: ok, {len(site.devices)} device(s), "
          f"{sum(len(d.tags) for d in site.devices)} tag(s), config {site.hash}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.cli.run import run_agent

    return run_agent(Path(args.config), _state_dir(args.state_dir),
                     log_format=args.log_format, log_level=args.log_level)


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.cli.demo import run_demo

    return run_demo(duration=args.duration, broker=args.broker, workdir=args.workdir)


def cmd_read(args: argparse.Namespace) -> int:
    from agent.cli.commission import run_read

    return run_read(args)


def cmd_write(args: argparse.Namespace) -> int:
    from agent.cli.commission import run_write

    return run_write(args)


#: Sub-commands this module defines; any other comes from COMMANDS_GROUP.
BUILT_IN = frozenset({"run", "check", "demo", "read", "write"})


def build_parser(*, plugin_commands: bool = True) -> argparse.ArgumentParser:
    """The whole command line; ``plugin_commands=False`` leaves out the plugged-in ones.

    Finding them reads every installed package's metadata (importlib.metadata
    with email, zipfile, csv: ~2 MB) and imports their modules (OPC UA's
    ``browse``), which ``run`` on a Modbus-only gateway would keep for good.
    """
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Shop-floor gateway: polls devices, buffers on disk, forwards over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the agent in the foreground (what systemd starts)")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="site file (%(default)s)")
    p.add_argument("--state-dir", help="buffer, certificates, last-good config "
                   "(default: $STATE_DIRECTORY, else /var/lib/edge-agent)")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="overrides log_level of the site file")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a site file without touching devices")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="site file (%(default)s)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="simulated devices + the agent, with a live view")
    p.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883",
                   help="broker to publish to when it answers (%(default)s)")
    p.add_argument("--workdir", default=None, help="keep demo state here (default: temporary)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("read", help="one-shot read for commissioning, as a table")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    p.add_argument("device")
    p.add_argument("tags", nargs="*", help="tags to read (all when none)")
    p.add_argument("--address", action="append", default=[],
                   help="ad-hoc address not in the file (repeatable), e.g. HR100")
    p.add_argument("--type", dest="type_", action="append", default=[],
                   help="type of the ad-hoc address before it (or of all, given once), e.g. float32")
    p.add_argument("--order", action="append", default=[],
                   help="byte order of the ad-hoc address before it (or of all), e.g. CDAB")
    p.add_argument("--state-dir", help="where drivers keep state (certificates)")
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("write", help="one guarded write (writable tags, within bounds, read back)")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    p.add_argument("device")
    p.add_argument("tag")
    p.add_argument("value", help="number, true/false, or text")
    p.add_argument("--state-dir", help="where drivers keep state (certificates)")
    p.set_defaults(func=cmd_write)

    if plugin_commands:
        _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: Any) -> None:
    """Protocol-specific commands (e.g. OPC UA `browse`) and `remote` plug in here."""
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as err:
            broken = sub.add_parser(ep.name, help=f"(unavailable: {err})")
            broken.set_defaults(func=lambda _a, e=err, n=ep.name: _unavailable(n, e))


def _unavailable(name: str, err: Exception) -> int:
    print(f"edge-agent {name}: unavailable: {type(err).__name__}: {err}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # A built-in command parses without the plugged-in ones; anything else
    # (a plugin's command, --help, a typo) gets the whole parser.
    built_in = bool(words) and words[0] in BUILT_IN
    args = build_parser(plugin_commands=not built_in).parse_args(words)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
