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


def build_fake_wheel(
    directory: Path,
    version: str,
    *,
    name: str = "m2m-edge-agent",
    requires: tuple[str, ...] = (),
    tag: str = "py3-none-any",
) -> Path:
    """Write ``NAME-VERSION-TAG.whl`` into ``directory``.

    The default is the agent stand-in; other names make dependency stand-ins
    (``tag`` e.g. ``cp311-cp311-manylinux2014_x86_64`` for a compiled one).
    """
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {req}\n" for req in requires)
    purelib = "true" if tag.endswith("-none-any") else "false"
    files = {
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: edge-agent-tests\n"
            f"Root-Is-Purelib: {purelib}\nTag: {tag}\n"
        ).encode(),
    }
    if name == "m2m-edge-agent":
        files["edge_agent_fake.py"] = _MODULE.format(version=version).encode()
        files[f"{info}/entry_points.txt"] = (
            b"[console_scripts]\nedge-agent = edge_agent_fake:main\n"
        )
    else:
        files[f"{dist}.py"] = b"VALUE = 1\n"
    record = [_record_line(n, data) for n, data in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    return path


@pytest.fixture
def fake_wheel() -> Callable[..., Path]:
    """``fake_wheel(directory, version, **kw)``: see :func:`build_fake_wheel`."""
    return build_fake_wheel
