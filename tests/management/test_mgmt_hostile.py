"""Hostile commands and pushed configs: exactly one reply each, no hang, a prompt stop."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import psutil

from tests.conftest import Broker, async_wait_until
from tests.core.test_config_hostile import big_site
from tests.management.conftest import Running, running_agent

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


async def test_stop_during_a_validation_does_not_wait_for_it(broker: Broker,
                                                             tmp_path: Path) -> None:
    def validators() -> list[psutil.Process]:
        return [p for p in psutil.Process().children(recursive=True)
                if "agent.config.bounded" in " ".join(p.cmdline())]

    async with running_agent(broker, tmp_path) as gw, gw.client() as rc:
        # Valid and near the size cap: seconds of validation in the child.
        text = big_site(15000)
        pending = asyncio.create_task(rc.call("config.apply", {"yaml": text}, wait=60))
        await async_wait_until(validators, 30, "validator running")
        start = time.monotonic()
        gw.agent.stop()
        await asyncio.wait_for(asyncio.shield(gw.task), 10)
        assert time.monotonic() - start < 5
        pending.cancel()
    await async_wait_until(lambda: not validators(), 10, "validator gone")
