"""Bounds on what the config loader accepts, so no input can exhaust the agent.

A site file can arrive from anyone allowed to send ``config.apply``; each
bound below turns an input that would exhaust memory, the stack or a core
into an ordinary ``FILE:LINE: key.path: message`` problem.  The numbers are
far above any real site (a 2,000-tag site is ~150 KB, ~14,000 nodes and 6
levels deep; 50,000 tags are ~3.5 MB and ~350,000 nodes).
"""

from __future__ import annotations

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_NODES",
    "MAX_PROBLEMS",
    "MAX_SECRET_BYTES",
    "MAX_SITE_BYTES",
    "VALIDATE_TIMEOUT_S",
    "human_size",
]

#: A site file (on disk or in ``config.apply``), in bytes of UTF-8.
MAX_SITE_BYTES = 8 * 1024 * 1024
#: Nesting of mappings and lists, aliases followed: the composer and the
#: constructor recurse once per level (Python's stack ends near 1,000).
MAX_DEPTH = 64
#: Nodes once every alias is expanded: `resolve_references` and pydantic walk
#: the expanded tree, so a 600-byte "billion laughs" would never finish.
MAX_NODES = 2_000_000
#: Digits of a YAML integer (Python refuses to convert past 4,300; no
#: setting needs more than a 64-bit number).
MAX_INT_DIGITS = 40
#: Problems described in full; the rest are counted in one last line.
MAX_PROBLEMS = 100
#: A ``${file:..}`` secret: a password, a key, a token; never /dev/zero.
MAX_SECRET_BYTES = 64 * 1024
#: Wall-clock budget of one ``config.apply`` validation, in its own process.
VALIDATE_TIMEOUT_S = 60.0


def human_size(n: int) -> str:
    """``1048576`` -> ``1MB`` (the units the site file uses)."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n} bytes"
