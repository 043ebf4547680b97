"""Signed commands: good, bad, stale, replayed, wrong topic; the rate limit."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.management.protocol import CommandError
from agent.management.security import Guard, ReplayCache, canonical, sign
from agent.pipeline.pacing import TokenBucket
from tests.conftest import Broker
from tests.management.conftest import running_agent

KEY = b"s3cret-command-key"


def test_canonical_form_is_the_specs() -> None:
    req = {"id": "a", "args": {"z": 1, "b": [1, 2]}, "ts": 5, "sig": "ignored"}
    assert canonical(req) == b'{"args":{"b":[1,2],"z":1},"id":"a","ts":5}'
    # Independent check with the standard library, as a cloud-side signer would do it.
    import hashlib
    import hmac
    body = json.dumps({k: v for k, v in req.items() if k != "sig"}, sort_keys=True,
                      separators=(",", ":")).encode()
    assert sign(req, KEY) == hmac.new(KEY, body, hashlib.sha256).hexdigest()


def _signed(rid: str, ts: int, key: bytes = KEY, **extra: object) -> dict[str, Any]:
    req: dict[str, Any] = {"id": rid, "args": {}, "ts": ts, **extra}
    req["sig"] = sign(req, key)
    return req


def test_guard_refusals() -> None:
    now = [1_000_000_000_000]
    guard = Guard(key=KEY, window_s=60, rate=100, clock_ms=lambda: now[0])
    guard.check_signature(_signed("ok-1", now[0]), "ping")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"id": "n1", "args": {}}, "not signed"),
        (_signed("b1", now[0], key=b"other"), "bad signature"),
        ({**_signed("t1", now[0]), "args": {"level": "debug"}}, "bad signature"),  # tampered
        (_signed("s1", now[0] - 61_000), "stale command"),
        (_signed("s2", now[0] + 61_000), "stale command"),
        (_signed("ok-1", now[0]), "was used before (replay)"),
        (_signed("c1", now[0], cmd="ping"), "signed for command 'ping', received on 'restart'"),
        ({**_signed("x", 0), "ts": "soon", "sig": sign({"id": "x", "args": {}, "ts": "soon"}, KEY)},
         "no integer \"ts\""),
    ]
    for req, needle in cases:
        with pytest.raises(CommandError, match=None) as err:
            guard.check_signature(req, "restart" if "cmd" in req else "ping")
        assert needle in str(err.value), (req, err.value)
    # A stale or bad request does not poison the cache: its id stays usable.
    guard.check_signature(_signed("s1", now[0]), "ping")
    guard.check_signature(_signed("b1", now[0]), "ping")


def test_replay_cache_forgets_only_after_the_window() -> None:
    now = [10_000_000]
    guard = Guard(key=KEY, window_s=10, rate=100, clock_ms=lambda: now[0])
    guard.check_signature(_signed("r1", now[0]), "ping")
    now[0] += 9_000
    with pytest.raises(CommandError, match="replay"):
        guard.check_signature(_signed("r1", now[0] - 9_000), "ping")
    now[0] += 2_000  # the original ts is out of the window now: stale, not replay
    with pytest.raises(CommandError, match="stale"):
        guard.check_signature(_signed("r1", now[0] - 11_000), "ping")
    assert not guard.replays.seen("r1", now[0])
    assert len(guard.replays) == 0, "expired ids are forgotten"


def test_replay_cache_is_bounded_and_refuses_rather_than_forgets() -> None:
    cache = ReplayCache(capacity=3)
    for i in range(3):
        cache.add(f"id{i}", expires_ms=1_000, now_ms=0)
    with pytest.raises(CommandError, match="too many recent commands"):
        cache.add("id3", expires_ms=1_000, now_ms=10)
    assert cache.seen("id0", now_ms=10)
    cache.add("id3", expires_ms=5_000, now_ms=2_000)  # the others expired
    assert len(cache) == 1


def test_token_bucket() -> None:
    t = [0.0]
    bucket = TokenBucket(rate=2, burst=4, clock=lambda: t[0])
    assert [bucket.try_take() for _ in range(5)] == [True] * 4 + [False]
    t[0] += 0.5
    assert bucket.try_take() and not bucket.try_take()


async def test_signed_commands_against_the_gateway(broker: Broker, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    keyfile = tmp_path / "command.key"
    keyfile.write_text(KEY.decode() + "\n")  # as `echo key > file` writes it
    management = {"command_key": f"${{file:{keyfile}}}", "command_window": "30s"}
    async with running_agent(broker, tmp_path, devices=[], management=management) as gw:
        async with gw.client(key=KEY) as good:
            reply = await good.call("ping")
            assert reply["ok"], reply
            # Replay the very same signed bytes: refused.
            req = good.request("ping")
            body = json.dumps(req)
            first = await good.send_raw("ping", body, "rp-1", 10)
            again = await good.send_raw("ping", body, "rp-2", 10)
            assert first["ok"] and again["ok"] is False and "replay" in again["error"]
            # Moved to another command's topic: refused.
            moved = await good.send_raw("restart", json.dumps(good.request("ping")), "mv", 10)
            assert moved["ok"] is False and "signed for command 'ping'" in moved["error"]
            # Stale: signed 5 minutes ago.
            old = {"id": "old-1", "cmd": "ping", "args": {}, "ts": int(time.time() * 1000) - 300_000}
            old["sig"] = sign(old, KEY)
            stale = await good.send_raw("ping", json.dumps(old), "st", 10)
            assert stale["ok"] is False and "stale" in stale["error"]
        async with gw.client() as unsigned:
            reply = await unsigned.call("ping")
            assert reply["ok"] is False and "not signed" in reply["error"]
        async with gw.client(key=b"wrong") as wrong:
            reply = await wrong.call("status")
            assert reply["ok"] is False and "bad signature" in reply["error"]
        assert not gw.task.done()
    # Every refusal is in the log, with its reason.
    refusals = [r.getMessage() for r in caplog.records
                if r.name == "agent.management" and "refused" in r.getMessage()]
    for needle in ("replay", "signed for command 'ping'", "stale", "not signed", "bad signature"):
        assert any(needle in line for line in refusals), (needle, refusals)


async def test_rate_limit_refuses_with_a_reply(broker: Broker, tmp_path: Path) -> None:
    async with running_agent(broker, tmp_path, devices=[],
                             management={"command_rate": 1}) as gw, gw.client() as rc:
        # Burst is 2x the rate: of 6 quick pings at least 3 are refused, each with a reply.
        import asyncio
        replies = await asyncio.gather(*(rc.call("ping") for _ in range(6)))
        refused = [r for r in replies if not r["ok"]]
        assert len(refused) >= 3, replies
        assert all("rate limit" in r["error"] for r in refused)
        assert sum(r["ok"] for r in replies) >= 1
