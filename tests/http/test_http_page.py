"""The status page in a real browser: headless Chromium loads ``/`` from a
running agent, its script refreshes from ``/api/status``, and the DOM shows
the devices, a live value and the dead device as down.  A phone-sized
screenshot is kept in the test's tmp dir (``status-page.png``)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from tests.http.conftest import Running, get

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags that work on a machine without network or GPU, and run as root.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
# Virtual time runs the page's 5 s refresh timer without waiting 5 s of real
# time; Chromium pauses it while the page's fetch is on the wire.
BUDGET_MS = 12_000


async def chromium(tmp: Path, url: str, *args: str) -> bytes:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run ./dev.sh test, which installs it")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={BUDGET_MS}",
        *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


def cycles_in(html: str) -> int:
    match = re.search(r'<tr data-tag="cycles"><td>cycles</td><td class="num">(\d+)</td>', html)
    assert match, html[:3000]
    return int(match.group(1))


def device_state(html: str, name: str) -> str:
    match = re.search(rf'data-device="{re.escape(name)}" data-state="(\w+)"', html)
    assert match, f"{name} not on the page"
    return match.group(1)


async def test_page_in_headless_chromium(running: Running, tmp_path: Path) -> None:
    served = (await get(running.base + "/")).body.decode()
    assert "Content-Security-Policy" not in served  # a header, not a meta tag
    before = cycles_in(served)
    assert device_state(served, "dead-1") == "down"  # readable without JavaScript too

    assert '<h2>Active alarms</h2><p class="muted">none</p>' in served
    # Stand-in for the processing stage's alarms, in its shape:
    # {device: [alarm, ...]}; the refreshed page must show it.
    alarm = {"alarm": "oil_hot", "tag": "oil_temp", "since": 1_700_000_000_000, "value": 91.5,
             "limit": 90, "severity": "high"}
    running.agent.processing.active_alarms = lambda: {"sim-press": [alarm]}  # type: ignore[method-assign]

    dom = (await chromium(tmp_path, running.base + "/", "--dump-dom")).decode()
    assert re.search(r"<tr><td>sim-press</td><td>oil_hot</td><td>oil_temp</td><td>high</td>"
                     r'<td class="num">91.5</td><td>2023-11-14 22:13:20 UTC</td></tr>', dom), dom
    refreshes = re.search(r'data-refreshes="(\d+)"', dom)
    assert refreshes and int(refreshes.group(1)) >= 1, "the page did not refresh itself"
    assert device_state(dom, "sim-press") == "up"
    assert device_state(dom, "dead-1") == "down"
    assert "last error: cannot connect" in dom
    assert cycles_in(dom) > before, "the live counter did not move after the refresh"
    assert "degC" in dom
    dead = dom[dom.index('data-device="dead-1"'):]
    assert re.search(r'<tr data-tag="cycles"><td>cycles</td><td class="num">-</td><td></td>'
                     r'<td><span class="bad">bad</span>', dead), dead[:2000]
    assert "Uplink" in dom and "connected since" in dom and "Recent problems" in dom

    shot = tmp_path / "status-page.png"
    await chromium(tmp_path, running.base + "/", f"--screenshot={shot}",
                   "--window-size=412,1600")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
