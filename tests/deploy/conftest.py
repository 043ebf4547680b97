"""Fixtures for the deployment tests: tiny stand-in wheels of m2m-edge-agent for installer tests.

The installer's job is venvs, symlinks and files, not our dependencies; a
real install pulls ~40 MB of wheels per version, too slow to do four times
per test run.  These wheels have the real distribution name, a real
`edge-agent` console script with `--version` and `check -c FILE`, and no
dependencies.  `check` rejects a file containing ``reject-by-VERSION``, so a
test can make one version refuse the technician's config.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

_MODULE = '''\
import sys

VERSION = "{version}"


def main() -> int:
    args = sys.argv[1:]
    if args == ["--version"]:
        print("edge-agent " + VERSION)
        return 0
    if args[:2] == ["check", "-c"]:
        text = open(args[2]).read()
        if "reject-by-" + VERSION in text:
            print(args[2] + ":1: gateway: rejected by " + VERSION, file=sys.stderr)
            return 1
        return 0
    print("usage: edge-agent --version | check -c FILE", file=sys.stderr)
    return 2
'''


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_fake_wheel(directory: Path, version: str) -> Path:
    """Write ``m2m_edge_agent-VERSION-py3-none-any.whl`` into ``directory``."""
    info = f"m2m_edge_agent-{version}.dist-info"
    files = {
        "edge_agent_fake.py": _MODULE.format(version=version).encode(),
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: m2m-edge-agent\nVersion: {version}\n"
        ).encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: edge-agent-tests\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{info}/entry_points.txt": b"[console_scripts]\nedge-agent = edge_agent_fake:main\n",
    }
    record = [_record_line(name, data) for name, data in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"m2m_edge_agent-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def fake_wheel() -> Callable[[Path, str], Path]:
    """``fake_wheel(directory, version)`` writes a stand-in wheel there."""
    return build_fake_wheel
