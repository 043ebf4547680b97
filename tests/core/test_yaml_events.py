"""The one-pass event builder gives exactly what the node path gives, or declines."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import yaml_source
from agent.config.yaml_events import UNSUPPORTED, build_from_events
from agent.config.yaml_source import PosDict, PosList, YamlProblem, load_yaml

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(yaml_source._Parser is yaml_source._PyParser,
                                reason="the event builder needs libyaml")


def _node_path(text: str) -> Any:
    """load_yaml's long way: compose nodes, check aliases, construct."""
    loader = yaml_source._Loader(text)
    node = loader.get_single_node()
    if node is None:
        return None
    if loader.aliases:
        yaml_source._check_expansion(node)
    return loader.construct_document(node)


def _fast(text: str) -> Any:
    return build_from_events(yaml_source._Loader(text), PosDict, PosList)


def _same(a: Any, b: Any) -> bool:
    """Equal values, types, lines, key lines and item lines, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, PosDict):
        return (a.line == b.line and a.key_lines == b.key_lines and list(a) == list(b)
                and all(_same(a[k], b[k]) for k in a))
    if isinstance(a, PosList):
        return (a.line == b.line and a.item_lines == b.item_lines and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b, strict=True)))
    return bool(a == b or (a != a and b != b))  # NaN is NaN


def _check(text: str) -> bool:
    """True when the fast pass answered (and matched), False when it declined."""
    try:
        want = _node_path(text)
    except (YamlProblem, yaml.YAMLError):
        assert _fast(text) is UNSUPPORTED, text  # a problem is always the node path's
        return False
    got = _fast(text)
    if got is UNSUPPORTED:
        return False
    assert _same(got, want), text
    return True


def test_every_site_file_of_the_project_gives_the_same_tree() -> None:
    files = [*ROOT.glob("tests/cases/*/*.yaml"), *ROOT.glob("configs/*.yaml"),
             *ROOT.glob("drivers/*/*.yaml")]
    assert len(files) > 20
    answered = sum(_check(f.read_text(encoding="utf-8", errors="surrogatepass")) for f in files)
    assert answered > len(files) // 2  # the common case is the fast one


SCALARS = ["0", "-7", "+3", "0x1F", "1_000", "12345678901234567890", "1" * 45, "1.5", "-2e3",
           ".inf", "-.Inf", ".nan", "1.", "true", "False", "TRUE", "yes", "NO", "on", "~",
           "null", "", "040001", "1:30", "'quoted'", '"dq \\u00e9"', "text with spaces",
           "'0x10'", '"\\uD800"', "HR40001", "é ü", "a: b", "- x", "[1, 2]", "{k: v}",
           "|\n  block\n  text", ">\n  folded\n  text", "&a x", "*a", "!!str x", "!custom y"]


def _doc(rng: random.Random, depth: int) -> str:
    """A random YAML fragment, block or flow style."""
    pick = rng.random()
    if depth > 3 or pick < 0.4:
        return rng.choice(SCALARS)
    if pick < 0.7:
        keys = [rng.choice(["name", "address", "1", "true", "~", "k", "k", "x y", "0x2"])
                for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.3:
            return "{" + ", ".join(f"{k}: {_doc(rng, depth + 1)}" for k in keys) + "}"
        return "\n".join(f"{k}:\n" + _indent(_doc(rng, depth + 1)) for k in keys) or "{}"
    items = [_doc(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if rng.random() < 0.3:
        return "[" + ", ".join(items) + "]"
    return "\n".join("-\n" + _indent(item) for item in items) or "[]"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines()) or "  ~"


def test_random_documents_give_the_same_tree_or_are_declined() -> None:
    rng = random.Random(16)
    answered = 0
    for _ in range(600):
        answered += _check(_doc(rng, 0))
    assert answered > 200


def test_a_ten_thousand_tag_site_parses_faster_and_the_same() -> None:
    text = yaml.safe_dump({"devices": [
        {"name": f"d{i}", "driver": "modbus", "poll": "100ms",
         "tags": [{"name": f"r{j}", "address": f"HR{j}", "type": "uint16", "scale": 0.1}
                  for j in range(1000)]} for i in range(10)]})
    t0 = time.process_time()
    slow = _node_path(text)
    t1 = time.process_time()
    fast = load_yaml(text)
    t2 = time.process_time()
    assert _same(fast, slow)
    print(f"\n10,000 tags: node path {t1 - t0:.2f} s, events {t2 - t1:.2f} s")
    assert t2 - t1 < (t1 - t0) * 0.7, (t1 - t0, t2 - t1)
