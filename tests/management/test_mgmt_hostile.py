"""Hostile commands and pushed configs: exactly one reply each, no hang, a prompt stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from agent.cli.remote.client import BrokerOptions, RemoteClient, RemoteTimeout
from tests.conftest import Broker, async_wait_until
from tests.core.test_config_hostile import big_site
from tests.management.conftest import GATEWAY, SITE, Running

ROOT = Path(__file__).resolve().parents[2]

# A 600-byte "billion laughs": walked alias by alias it never finished.
BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
               for p, c in zip("abcdefgh", "bcdefghi", strict=True))
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + BOMB


async def test_deeply_nested_json_gets_one_reply_with_its_id(gateway: Running) -> None:
    async with gateway.client() as rc:
        deep = b'{"id": "deep-1", "args": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        reply = await rc.send_raw("ping", deep, "deep-1", 10)
        assert reply == {"id": "deep-1", "ok": False,
                         "error": "malformed request: nested deeper than 32 levels"}
        # Decodable, but deeper than any command's arguments.
        nested: list[object] = []
        for _ in range(40):
            nested = [nested]
        reply = await rc.send_raw("status", json.dumps({"id": "deep-2", "args": {"x": nested}}),
                                  "deep-2", 10)
        assert reply["id"] == "deep-2" and "nested deeper" in reply["error"]
        assert (await rc.call("ping"))["ok"]


async def test_hostile_config_apply_is_answered_with_lines_and_ping_stays_fast(
        gateway: Running) -> None:
    before = gateway.agent.site.hash
    hostile = {
        "alias bomb": (BOMB, "aliases expand to more than"),
        "control character": ("gateway: {id: \x07}\n", "character U+0007 is not allowed"),
        "nesting": ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64"),
        "huge size": ("buffer: {max_size: " + "9" * 400 + "GB}\n", "at most 1024GB"),
        "zero secret": ("management: {command_key: '${file:/dev/zero}'}\n",
                        "not a regular file"),
    }
    async with gateway.client() as rc:
        for name, (text, needle) in hostile.items():
            start = time.monotonic()
            reply = await rc.call("config.apply", {"yaml": text}, wait=30)
            ping_start = time.monotonic()
            assert (await rc.call("ping", wait=5))["ok"]
            assert time.monotonic() - ping_start < 2, name
            assert reply["ok"] is False, name
            assert any(needle in line for line in reply["problems"]), (name, reply)
            # `LINE: key.path: message`, never a raw exception.
            for line in reply["problems"]:
                head = line.split(": ", 2)
                assert head[0].isdigit() and len(head) == 3, (name, line)
                assert "Error:" not in line, (name, line)
            assert time.monotonic() - start < 10, name
    assert gateway.agent.site.hash == before


async def test_sigterm_during_a_validation_exits_promptly(broker: Broker,
                                                         tmp_path: Path) -> None:
    # The case: SIGTERM while a pushed config is being validated
    # logged "stopped" and the process never exited (the executor thread).
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"gateway": {"id": GATEWAY, "site": SITE},
                                    "uplink": {"mqtt": {"url": broker.url}}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli.main", "run", "-c", str(site),
         "--state-dir", str(tmp_path / "state")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    agent = psutil.Process(proc.pid)

    def validators() -> list[psutil.Process]:
        found = []
        for p in agent.children(recursive=True) if proc.poll() is None else []:
            with contextlib.suppress(psutil.NoSuchProcess):
                if "agent.config.bounded" in " ".join(p.cmdline()):
                    found.append(p)
        return found

    try:
        client = RemoteClient(BrokerOptions(url=broker.url), site=SITE, gateway=GATEWAY)
        async with client as rc:
            ping = None
            for _ in range(60):  # until the agent's uplink is up
                with contextlib.suppress(RemoteTimeout):
                    ping = await rc.call("ping", wait=1)
                    break
            assert ping is not None and ping["ok"], "the agent did not come up"
            # Valid and near the size cap: seconds of validation in the child.
            pending = asyncio.create_task(rc.call("config.apply", {"yaml": big_site(15000)},
                                                  wait=60))
            await async_wait_until(validators, 30, "validator running")
            child = validators()[0]
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await async_wait_until(lambda: proc.poll() is not None, 15, "the agent to exit")
            took = time.monotonic() - start
            pending.cancel()
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        # Validating 15,000 tags takes 4+ s of CPU: an agent that waited for
        # it (a thread, as before) could not be out this soon.
        assert took < 3, took
        await async_wait_until(lambda: not child.is_running() or child.status() == "zombie",
                               10, "the validator to be gone")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
