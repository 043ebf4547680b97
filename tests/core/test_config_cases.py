"""Walk tests/cases/*/: each site.yaml must give exactly the errors in expected.txt.

A line of expected.txt ending in ':' only has to start a reported line
(for messages that quote a library's wording).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = sorted((Path(__file__).parent.parent / "cases").glob("*/site.yaml"))


@pytest.mark.parametrize("site", CASES, ids=[c.parent.name for c in CASES])
def test_case(site: Path) -> None:
    expected = (site.parent / "expected.txt").read_text().splitlines()
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "check", "-c", "site.yaml"],
        cwd=site.parent, capture_output=True, text=True, timeout=60,
    )
    got = [line for line in result.stderr.splitlines() if line.startswith("site.yaml:")]
    got = [line for line in got if "problem(s)" not in line]
    if expected == ["ok"]:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(got) == len(expected), "\n".join(got)
    for want, have in zip(expected, got, strict=True):
        if want.endswith(":"):
            assert have.startswith(want), have
        else:
            assert have == want
