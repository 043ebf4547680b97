"""Request planning: the greedy plan is the minimum (checked exhaustively), splits halve."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from drivers.modbus.options import ModbusDevice
from drivers.modbus.planning import (
    Planner,
    TagSpec,
    build_blocks,
    minimum_requests,
    resolve,
    split,
)

TYPES = [("uint16", 1), ("float32", 2), ("float64", 4)]


def _device(tags: list[dict[str, Any]], **extra: Any) -> ModbusDevice:
    return ModbusDevice.model_validate({
        "name": "d", "driver": "modbus",
        "connection": {"transport": "tcp", "host": "h"}, "tags": tags, **extra,
    })


def _random_tags(rng: random.Random, n: int, span: int) -> list[dict[str, Any]]:
    tags = []
    for i in range(n):
        table = rng.choice(["HR", "HR", "IR", "CO"])
        addr = rng.randrange(span)
        if table == "CO":
            tags.append({"name": f"t{i}", "address": f"CO{addr * 7}"})
        elif rng.random() < 0.15:
            tags.append({"name": f"t{i}", "address": f"{table}{addr}.{rng.randrange(16)}"})
        else:
            kind, _ = rng.choice(TYPES)
            tags.append({"name": f"t{i}", "address": f"{table}{addr}", "type": kind})
    return tags


def _partitions(items: list[TagSpec]) -> Iterator[list[list[TagSpec]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]
        yield [[first], *part]


def _readable(group: list[TagSpec], gap: int, limit: int) -> bool:
    """One request can read these tags: within the limit, no unread stretch above gap."""
    if len({s.table for s in group}) > 1:
        return False
    run = sorted(group, key=lambda s: s.start)
    end = run[0].end
    for s in run[1:]:
        if s.start - end > gap:
            return False
        end = max(end, s.end)
    return end - run[0].start <= limit


def _exhaustive_minimum(specs: list[TagSpec], gap: int, regs: int, bits: int) -> int:
    best = len(specs)
    for part in _partitions(specs):
        if len(part) < best and all(
            _readable(g, gap * 16 if g[0].table == "co" else gap,
                      bits if g[0].table == "co" else regs)
            for g in part
        ):
            best = len(part)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_greedy_plan_is_the_exhaustive_minimum(seed: int) -> None:
    rng = random.Random(seed)
    gap, regs, bits = rng.choice([0, 2, 10]), rng.choice([4, 8, 125]), rng.choice([16, 2000])
    dev = _device(_random_tags(rng, rng.randrange(2, 8), 40),
                  max_gap=gap, max_registers=max(regs, 4), max_bits=bits)
    specs = resolve(dev, dev.tags)
    blocks = build_blocks(specs, max_gap=gap, max_registers=dev.max_registers, max_bits=bits)
    assert len(blocks) == _exhaustive_minimum(specs, gap, dev.max_registers, bits)
    assert len(blocks) == minimum_requests(
        specs, max_gap=gap, max_registers=dev.max_registers, max_bits=bits
    )
    # Every tag is in exactly one block, entirely inside it, within the limits.
    seen = [s.name for b in blocks for s in b.specs]
    assert sorted(seen) == sorted(s.name for s in specs)
    for b in blocks:
        assert b.count <= (bits if b.table == "co" else dev.max_registers)
        assert all(b.start <= s.start and s.end <= b.start + b.count for s in b.specs)


def test_large_maps_match_the_dynamic_programming_minimum() -> None:
    rng = random.Random(7)
    for _ in range(5):
        dev = _device(_random_tags(rng, 300, 3000), max_gap=rng.choice([0, 5, 20]),
                      max_registers=rng.choice([32, 125]))
        specs = resolve(dev, dev.tags)
        kw = {"max_gap": dev.max_gap, "max_registers": dev.max_registers, "max_bits": 2000}
        assert len(build_blocks(specs, **kw)) == minimum_requests(specs, **kw)


def test_limits_and_gaps() -> None:
    dense = _device([{"name": f"r{i}", "address": f"HR{i}"} for i in range(300)])
    assert [(b.start, b.count) for b in Planner(dense).plan()] == [(0, 125), (125, 125),
                                                                   (250, 50)]
    small = _device([{"name": f"r{i}", "address": f"HR{i}"} for i in range(30)], max_registers=8)
    assert len(Planner(small).plan()) == 4
    gappy = _device([{"name": "a", "address": "HR0"}, {"name": "b", "address": "HR11"},
                     {"name": "c", "address": "HR30"}], max_gap=10)
    assert [(b.start, b.count) for b in Planner(gappy).plan()] == [(0, 12), (30, 1)]
    coils = _device([{"name": f"c{i}", "address": f"CO{i * 100}"} for i in range(30)])
    # 100 bits apart is within max_gap (10 registers = 160 bits); 2000 bits per read.
    assert [(b.start, b.count) for b in Planner(coils).plan()] == [(0, 1901), (2000, 901)]


def test_split_keeps_overlapping_tags_together() -> None:
    dev = _device([
        {"name": "a", "address": "HR0", "type": "float32"},
        {"name": "a_bit", "address": "HR1.4"},
        {"name": "b", "address": "HR5"},
        {"name": "c", "address": "HR8"},
    ])
    (block,) = Planner(dev).plan()
    halves = split(block)
    assert halves is not None
    left, right = halves
    assert left.names == ["a", "a_bit"] and right.names == ["b", "c"]
    assert (right.start, right.count) == (5, 4)
    halves2 = split(left)
    assert halves2 is None  # a register and its bit cannot be read apart


def test_subset_plans_are_cached() -> None:
    dev = _device([{"name": f"r{i}", "address": f"HR{i * 50}"} for i in range(10)], max_gap=60)
    planner = Planner(dev)
    sub = planner.plan(("r1", "r2"))
    assert planner.plan(("r1", "r2")) is sub
    assert [b.names for b in sub] == [["r1", "r2"]]
    assert len(planner.plan()) == 4  # 0-100, 150-250, 300-400, 450
    assert planner.plan() is planner.plan(None)
