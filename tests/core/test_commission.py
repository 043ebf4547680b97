"""`edge-agent read` and `write` against the Modbus simulator, through the real CLI."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import yaml

from drivers.modbus.simulator import simulate

ROOT = Path(__file__).resolve().parents[2]


async def cli(*args: str) -> tuple[int, str, str]:
    # A subprocess without blocking: the simulator answers from this event loop.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli.main", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_read_write_commissioning(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        devices = await simulate(stack, tmp_path)
        name = devices[0]["name"]
        site = tmp_path / "site.yaml"
        site.write_text(yaml.safe_dump({"gateway": {"id": "gw", "site": "s"},
                                        "uplink": {"mqtt": {"url": "mqtt://127.0.0.1:1"}},
                                        "devices": devices}))
        state = ["--state-dir", str(tmp_path / "state")]

        rc, out, err = await cli("read", "-c", str(site), name, *state)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0].split() == ["TAG", "VALUE", "UNIT", "QUALITY"]
        for tag in ("oil_temp", "cycles", "running", "alarm", "setpoint"):
            row = next(line for line in lines if line.startswith(tag))
            assert row.rstrip().endswith("good"), row
        assert "degC" in next(line for line in lines if line.startswith("oil_temp"))

        # Ad-hoc addresses, each with its own type: the same registers as the tags.
        rc, out, err = await cli("read", "-c", str(site), name, "cycles", *state,
                                 "--address", "HR102", "--type", "uint32",
                                 "--address", "40201", "--type", "int16")
        assert rc == 0, err
        rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:-1]}
        assert abs(int(rows["HR102"]) - int(rows["cycles"])) <= 2
        assert rows["40201"] == "250"  # HR200, one-based Modicon form, the setpoint

        rc, out, err = await cli("write", "-c", str(site), name, "setpoint", "300", *state)
        assert rc == 0, err
        assert "setpoint = 300 (read back)" in out
        rc, out, err = await cli("read", "-c", str(site), name, "setpoint", *state)
        assert "300" in out.splitlines()[1]

        rc, _, err = await cli("write", "-c", str(site), name, "setpoint", "900", *state)
        assert rc == 1 and "above max 500" in err
        rc, _, err = await cli("write", "-c", str(site), name, "oil_temp", "1", *state)
        assert rc == 1 and "not writable" in err
        rc, _, err = await cli("read", "-c", str(site), "nope", *state)
        assert rc == 1 and "no device 'nope'" in err
