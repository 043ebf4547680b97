"""Mutated site files through the loader: ``python -m tests.soak.fuzz_site --count 10000``.

Every mutant is written to ``site.yaml`` and loaded as ``edge-agent check``
loads it (:func:`load_site`).  An outcome is fine when it is a Site, or
ConfigErrors whose every line is ``site.yaml:LINE: key.path: message`` (one
line each, and not the validator's "please report it" safety net).  Anything
else is a failure; so is an input that takes over ``--slow`` seconds of CPU
(a SIGALRM at 10x that, wall clock, stops a hang and records it).  Prints one JSON summary;
failing inputs are saved to ``--keep`` for replay.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from agent.config.load import ConfigErrors, load_site
from tests.soak.fuzz_mutate import mutate_site, seeds

LINE = re.compile(r"^site\.yaml:\d+: [^\n]+: [^\n]+$")


class Hang(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


def check_one(path: Path) -> str | None:
    """"ok", "rejected", or what was wrong."""
    try:
        load_site(path)
    except ConfigErrors as err:
        for line in err.render().split("\n"):
            if not LINE.match(line):
                return f"badly formed problem line: {line[:200]!r}"
            if "please report it" in line:
                return f"safety net hit: {line[:200]!r}"
        return "rejected"
    return "ok"


def run(count: int, seed: int, slow_s: float, keep: Path | None) -> dict[str, Any]:
    corpus = seeds()
    rng = random.Random(seed)
    signal.signal(signal.SIGALRM, _alarm)
    failures: list[dict[str, Any]] = []
    slow = 0
    slowest = (0.0, -1)  # CPU seconds, input index
    slowest_wall = 0.0
    rejected = 0
    # Relative ${file:} references resolve here, not in the caller's folder.
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        path = Path("site.yaml")
        for i in range(count):
            data = mutate_site(rng, corpus)
            path.write_bytes(data)
            start, cpu = time.monotonic(), time.process_time()
            signal.setitimer(signal.ITIMER_REAL, slow_s * 10)
            try:
                problem = check_one(path)
            except Hang:
                problem = f"still running after {slow_s * 10:g} s"
            except BaseException as err:  # what the fuzz is looking for
                problem = f"uncaught {type(err).__name__}: {str(err)[:200]}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            took, took_cpu = time.monotonic() - start, time.process_time() - cpu
            # CPU time decides: on a machine shared by a test suite, wall
            # time measures the neighbours (both are reported).
            slowest = max(slowest, (took_cpu, i))
            slowest_wall = max(slowest_wall, took)
            if took_cpu > slow_s:
                slow += 1
                if problem in ("ok", "rejected"):
                    problem = f"took {took_cpu:.2f} s of CPU"
            if problem in ("ok", "rejected"):
                rejected += problem == "rejected"
                continue
            failures.append({"index": i, "problem": problem, "size": len(data)})
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"seed{seed}-{i}.yaml").write_bytes(data)
    return {"cases": count, "seed": seed, "rejected": rejected, "failures": len(failures),
            "first_failures": failures[:10], "slow": slow,
            "slowest_cpu_s": round(slowest[0], 3), "slowest_index": slowest[1],
            "slowest_wall_s": round(slowest_wall, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slow", type=float, default=2.0, help="seconds per input")
    parser.add_argument("--keep", type=Path, default=None, help="save failing inputs here")
    args = parser.parse_args()
    keep = args.keep.resolve() if args.keep else None
    summary = run(args.count, args.seed, args.slow, keep)
    print(json.dumps(summary))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
