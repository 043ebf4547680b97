"""A seeded mutator for site files and command payloads (no library needed).

Each mutant applies one to four operations to a seed: byte flips, control
characters, line edits, hostile scalars (400-digit numbers, ``.inf``,
``${file:/dev/zero}``), deep nesting, alias bombs, stray YAML syntax and
tags, truncation and splices of another seed.  A seed and an index name a
mutant exactly, so a failure found by hand is replayed by number.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SPECIALS = ["\x00", "\x07", "\x1b", "\x7f", "\ufffe", "\ufeff", "\u2028", "\x85", "\t", "\r",
             "é", "\U0001f600", "\\ud800", "\\0", "\\x1b"]
_HOSTILE_SCALARS = [
    "9" * 5000, "9" * 41, "9" * 400 + "d", "9" * 400 + "GB", "1e400", ".inf", "-.inf", ".nan",
    "-1", "0", "0x" + "f" * 100, "999999999999999999999ms", "1" * 300 + ".5s",
    "${file:/dev/zero}", "${file:/dev/urandom}", "${file:/proc/self/environ}", "${file:/}",
    "${file:/nonexistent}", "${env:}", "${env:HOME}", "${file:}", '"${file:/etc/host\\0name}"',
    "${x:y}", "${file:" + "a/" * 3000 + "}", "${", "}", "x" * 20000, '"\\ud800"',
    '"\\x07\\e"', "&a [*a]", "*undefined", "!!binary aGVsbG8=", "!!timestamp 2001-12-14",
    "!!python/object/apply:os.system [true]", "!!set {a, b}", "!!float 1", "[]", "{}", "~",
    "true", "'multi\nline'", "|\n  block", ">-", "- - -", "? complex", "@reserved", "`tick",
]
_SYNTAX = [":", ": ", "- ", "{", "}", "[", "]", "&a ", "*a", "!", "!!str ", "%YAML 1.1\n",
           "---\n", "...\n", "? ", "#", "'", '"', "|", ">", ",", "<<: *a\n", "\n  ", "\t"]


def seeds() -> list[bytes]:
    """Real site files: configs/, each driver's sample, every regression case."""
    paths = sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("drivers/*/sample.yaml"),
                    *ROOT.glob("tests/cases/*/site.yaml")])
    return [p.read_bytes() for p in paths]


def _nesting(rng: random.Random) -> str:
    n = rng.choice([10, 63, 65, 200, 900, 5000])
    open_, close = rng.choice([("[", "]"), ("{a: ", "}"), ("- ", "")])
    if open_ == "- ":
        return "x:\n" + "".join("  " * i + "- \n" for i in range(min(n, 300)))
    balanced = rng.random() < 0.8
    return "x: " + open_ * n + "1" + (close * n if balanced else close * (n // 2)) + "\n"


def _bomb(rng: random.Random) -> str:
    width, depth = rng.choice([(10, 9), (3, 20), (100, 4), (2, 40)])
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, depth):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _line_op(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    if not lines:
        return text
    i = rng.randrange(len(lines))
    op = rng.randrange(5)
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif op == 2:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 3:
        lines[i] = "  " + lines[i]
    else:
        lines[i] = lines[i][2:]
    return "\n".join(lines)


def _scalar_op(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    spots = [i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")]
    if not spots:
        return text
    i = rng.choice(spots)
    key = lines[i].split(": ", 1)[0]
    lines[i] = f"{key}: {rng.choice(_HOSTILE_SCALARS)}"
    return "\n".join(lines)


def _insert(text: str, pos: int, what: str) -> str:
    return text[:pos] + what + text[pos:]


def mutate_text(rng: random.Random, text: str, others: list[bytes]) -> str:
    ops: list[Callable[[], str]] = [
        lambda: _insert(text, rng.randrange(len(text) + 1), rng.choice(_SPECIALS)),
        lambda: _line_op(rng, text),
        lambda: _scalar_op(rng, text),
        lambda: text + _nesting(rng),
        lambda: text + _bomb(rng),
        lambda: _insert(text, rng.randrange(len(text) + 1), rng.choice(_SYNTAX)),
        lambda: text[: rng.randrange(len(text) + 1)],
        lambda: text + rng.choice(others).decode("utf-8", "replace")[rng.randrange(200):],
        lambda: text.replace(": ", ":", 1) if rng.random() < 0.5 else text.replace("  ", " ", 1),
        lambda: text + "".join(f"k{i}: {i}\n" for i in range(rng.choice([10, 1000, 30000]))),
    ]
    return rng.choice(ops)()


def mutate_site(rng: random.Random, corpus: list[bytes]) -> bytes:
    data = rng.choice(corpus)
    text = data.decode("utf-8")
    for _ in range(rng.randint(1, 4)):
        text = mutate_text(rng, text, corpus)
    out = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.15:  # raw bytes: invalid UTF-8 and binary junk
        b = bytearray(out)
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        out = bytes(b)
    return out


def mutate_command(rng: random.Random, rid: str, corpus: list[bytes]) -> tuple[str, bytes]:
    """A (command, payload) pair: mostly malformed, some well-formed but hostile."""
    commands = ["ping", "status", "config.get", "config.apply", "read", "write", "log_level",
                "buffer.stats", "nope", "", "c" * 300]
    command = rng.choice(commands)
    kind = rng.randrange(12)
    if kind == 0:
        return command, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    if kind == 1:
        n = rng.choice([33, 1000, 50_000, 200_000])
        return command, (f'{{"id": "{rid}", "args": ' + "[" * n + "]" * n + "}").encode()
    if kind == 2:
        return command, (f'{{"id": "{rid}", "args": {{"a": ' + "{\"a\": " * 5000).encode()
    if kind == 3:
        return command, json.dumps({"id": rid * rng.choice([1, 50]), "args": {}}).encode()
    if kind == 4:
        value: object = rng.choice([None, 1, 1.5, True, [], {}, "x" * 10_000, "\ud800", "\x00"])
        return command, json.dumps({"id": rid, "args": {"device": value, "tag": value,
                                                        "value": value, "level": value,
                                                        "timeout": value}}).encode("utf-8",
                                                                                   "surrogatepass")
    if kind == 5:
        site = mutate_site(rng, corpus).decode("utf-8", "replace")
        # Never a valid config: the fuzz must not move the agent's uplink.
        return "config.apply", json.dumps({"id": rid, "args": {
            "yaml": "fuzz-never-valid: 1\n" + site}}).encode()
    if kind == 6:
        text = json.dumps({"id": rid, "args": {}})
        cut = rng.randrange(len(text))
        return command, text[:cut].encode()
    if kind == 7:
        return command, json.dumps([rid, {"args": {}}]).encode()
    if kind == 8:
        return command, b"\xef\xbb\xbf" + json.dumps({"id": rid}).encode()
    if kind == 9:
        return command, json.dumps({"id": rid, "args": {"x": 1e308 * 10}}).encode()
    if kind == 10:
        return command, ("{" + ", ".join(f'"k{i}": {i}' for i in range(20_000))
                         + f', "id": "{rid}"}}').encode()
    return command, json.dumps({"id": rid, "args": rng.choice([{}, None, [], "x", 1])}).encode()
