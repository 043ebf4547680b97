"""The management README documents every command, CLI command and metrics field."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.remote.cli import register
from agent.management.commands import COMMANDS
from agent.pipeline.buffer import BufferStats
from agent.sdk.counters import DeviceCounters, UplinkCounters

README = (Path(__file__).resolve().parents[2] / "agent" / "management" / "README.md").read_text()


def test_every_command_is_documented() -> None:
    for command in COMMANDS:
        assert f"| `{command}` |" in README, command


def test_every_cli_command_is_documented() -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    remote = sub.choices["remote"]
    action = next(a for a in remote._actions if a.dest == "remote_command")
    commands = set(action.choices or ())
    assert set(commands) >= {"list", "status", "ping", "config", "read", "write", "restart",
                             "log-level", "buffer-stats"}
    for name in commands:
        assert f"| `{name}" in README, name
    for option in ("--broker", "--ca", "--cert", "--key", "--user", "--password-file", "--site",
                   "--gateway", "--prefix", "--key-file", "--timeout", "--json"):
        assert option in README, option


def test_every_metrics_field_is_documented() -> None:
    for key in ("ts", "uptime_s", "config_hash", "cpu.user_s", "cpu.system_s", "cpu.percent",
                "memory.rss_bytes"):
        assert f"`{key}`" in README, key
    for key in BufferStats().snapshot():
        assert f"buffer.{key}" in README or f"`{key}`" in README, key
    for key in UplinkCounters().snapshot():
        assert f"uplink.{key}" in README, key
    for key in (*DeviceCounters().snapshot(), "driver"):
        assert f".{key}" in README, key
