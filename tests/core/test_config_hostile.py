"""Hostile site files: bounded, reported with a line, never a traceback or a hang.

The folder cases (tests/cases/) cover each input through ``edge-agent check``;
these cover what a folder cannot: sizes, FIFOs, devices, and the child
process that validates a pushed config (deadline, cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import psutil
import pytest

from agent.config.bounded import discard_spare, parse_site_bounded
from agent.config.limits import MAX_SECRET_BYTES, MAX_SITE_BYTES, human_size
from agent.config.load import ConfigErrors, load_site, parse_site
from agent.config.secrets import resolve_references
from agent.config.yaml_source import load_yaml
from agent.sdk.types import SecretText
from tests.conftest import async_wait_until

HEAD = "gateway: {id: gw-1, site: plant-2}\nuplink:\n  mqtt: {url: 'mqtt://127.0.0.1:1883'}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_site(text, "site.yaml")
    return info.value.render().splitlines()


def big_site(tags: int) -> str:
    rows = "".join(f"      - {{name: t{i}, address: HR{i % 60000}, type: uint16}}\n"
                   for i in range(tags))
    return (HEAD + "devices:\n  - name: d\n    driver: modbus\n"
            "    connection: {transport: tcp, host: 127.0.0.1}\n    tags:\n" + rows)


def with_secret(path: str) -> str:
    return HEAD + f"management:\n  command_key: \"${{file:{path}}}\"\n"


def test_oversized_site_text_and_file_are_refused_without_reading_it_all(
        tmp_path: Path) -> None:
    assert problems("#" * (MAX_SITE_BYTES + 1)) == ["site.yaml:1: (top): the site file is "
                                                    f"larger than {human_size(MAX_SITE_BYTES)}"]
    # Characters under the cap, bytes over it.
    assert "larger than" in problems("#" + "é" * (MAX_SITE_BYTES // 2 + 1))[0]
    # /dev/zero as the site file: a bounded read, then a clear problem.
    with pytest.raises(ConfigErrors) as info:
        load_site("/dev/zero")
    assert f"larger than {human_size(MAX_SITE_BYTES)}" in info.value.render()
    binary = tmp_path / "site.yaml"
    binary.write_bytes(HEAD.encode() + b"log_level: \xff\n")
    with pytest.raises(ConfigErrors) as info:
        load_site(binary)
    assert info.value.render() == f"{binary}:4: (top): not UTF-8 text"


def test_secret_files_fifo_device_and_oversize_are_named_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    # Opening a FIFO for reading blocks until a writer comes: never opened.
    assert problems(with_secret(str(fifo))) == [
        f"site.yaml:5: management.command_key: secret file {fifo} is not a regular file"]
    assert time.monotonic() - start < 5
    big = tmp_path / "big.key"
    big.write_bytes(b"k" * (MAX_SECRET_BYTES + 1))
    assert problems(with_secret(str(big))) == [
        f"site.yaml:5: management.command_key: secret file {big} is larger than 64KB"]
    ok = tmp_path / "ok.key"
    ok.write_bytes(b"k" * (MAX_SECRET_BYTES - 1) + b"\n")
    assert parse_site(with_secret(str(ok))).config.management.command_key is not None


def test_aliased_secret_is_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A secret's value is data. An alias shares one mapping, so the walk meets
    # the resolved value again; a value spelling "${file:..}" must stay as is.
    monkeypatch.setenv("EDGE_TEST_PW", "${file:/etc/hostname}")
    root = load_yaml("a: &m {password: '${env:EDGE_TEST_PW}'}\nb: *m\n")
    reported: list[str] = []
    resolve_references(root, lambda loc, msg: reported.append(msg))
    assert reported == []
    assert root["b"] is root["a"]
    assert root["a"]["password"] == "${file:/etc/hostname}"
    assert isinstance(root["a"]["password"], SecretText)


def test_limits_leave_real_sites_alone() -> None:
    site = parse_site(big_site(2000), "site.yaml")
    assert len(site.devices[0].tags) == 2000
    # Nesting well past any real site (6 levels) but under the cap is fine.
    assert "unknown key 'x'" in problems(HEAD + "x: " + "[" * 60 + "]" * 60 + "\n")[0]


async def test_bounded_validation_matches_parse_site(tmp_path: Path) -> None:
    text = big_site(50)
    assert await parse_site_bounded(text, "site.yaml") == parse_site(text, "site.yaml")
    with pytest.raises(ConfigErrors) as info:
        await parse_site_bounded(HEAD + "devices: &d [*d]\n", "site.yaml")
    assert info.value.render() == ("site.yaml:4: (top): an alias refers to a node "
                                   "that contains it")


def _validators() -> list[psutil.Process]:
    """Validator children, except the idle spare (started after each answer)."""
    discard_spare()
    found = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "agent.config.bounded" in " ".join(p.cmdline()) and p.status() != "zombie":
                found.append(p)
    return found


async def test_spare_validator_answers_the_next_push_fast() -> None:
    text = big_site(50)
    await parse_site_bounded(text, "site.yaml")  # may start cold
    await asyncio.sleep(2.0)  # the spare imports meanwhile (not a timing assertion)
    start = time.monotonic()
    await parse_site_bounded(text, "site.yaml")
    warm = time.monotonic() - start
    print(f"warm validation: {warm:.3f} s")
    assert warm < 5


async def test_bounded_validation_deadline_kills_the_child() -> None:
    discard_spare()
    start = time.monotonic()
    with pytest.raises(ConfigErrors) as info:
        await parse_site_bounded(big_site(15000), "site.yaml", limit_s=0.5)
    assert time.monotonic() - start < 10
    assert info.value.render() == ("site.yaml:1: (top): validation took longer than 0.5 s; "
                                   "nothing was applied")
    assert _validators() == []


async def test_cancelled_validation_kills_the_child_and_frees_the_validator() -> None:
    discard_spare()
    task = asyncio.create_task(parse_site_bounded(big_site(15000), "site.yaml"))
    await async_wait_until(lambda: _validators(), 30, "validator started")
    with pytest.raises(ConfigErrors) as info:
        await parse_site_bounded(HEAD, "site.yaml")
    assert "another pushed config is being validated" in info.value.render()
    start = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - start < 5
    assert _validators() == []
    assert (await parse_site_bounded(HEAD, "site.yaml")).config.gateway.id == "gw-1"
