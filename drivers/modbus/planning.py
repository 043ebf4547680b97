"""Tags -> the fewest read requests.

Per table, tags are sorted by address and packed greedily: a request grows
while the next tag starts at most ``max_gap`` registers after the current
end and the whole request stays within ``max_registers`` (``max_bits`` for
coils and discrete inputs, where the gap counts 16 bits per register).
Packing in address order is optimal here: any tag that fits the current
request also fits the next one, so closing a request early never saves one.
``minimum_requests`` computes the same number by dynamic programming, so
tests and the benchmark check the greedy result against it.

When a device answers "illegal data address" for a merged request,
:func:`split` halves the request along its tags (tags that overlap stay
together) so the reader can narrow down the offending addresses; the plan
keeps the narrowed requests (see ``driver.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.modbus.addressing import TABLES, Table
from drivers.modbus.codec import BlockDecoder
from drivers.modbus.options import ModbusDevice, ModbusTag

__all__ = ["Block", "Planner", "TagSpec", "build_blocks", "minimum_requests", "split"]

#: Function code that reads each table.
READ_FC: dict[Table, int] = {"co": 1, "di": 2, "hr": 3, "ir": 4}


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One tag, resolved: where it lives and how big it is."""

    name: str
    table: Table
    start: int
    size: int
    bit: int | None
    #: The device's tags and this one's place in them.  Not the tag itself: a
    #: validated site keeps tags by column (agent.sdk.tag_table) and builds a tag
    #: when asked, so holding one per spec would keep every tag's model alive.
    tags: Sequence[ModbusTag] = field(compare=False, repr=False)
    index: int = field(compare=False)

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def tag(self) -> ModbusTag:
        """The tag's options (built on each call: keep what you need)."""
        return self.tags[self.index]


@dataclass(slots=True)
class Block:
    """One read request and how to decode its answer."""

    table: Table
    start: int
    count: int
    specs: tuple[TagSpec, ...]
    #: None for coils and discrete inputs (their answer is a list of bools).
    decoder: BlockDecoder | None = None

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def fc(self) -> int:
        return READ_FC[self.table]

    def __str__(self) -> str:
        return f"{self.table.upper()}{self.start}+{self.count}"


def make_block(specs: Sequence[TagSpec]) -> Block:
    start = min(s.start for s in specs)
    end = max(s.end for s in specs)
    block = Block(specs[0].table, start, end - start, tuple(specs))
    if block.table in ("hr", "ir"):
        block.decoder = BlockDecoder([(s.tag, s.start - start, s.bit) for s in specs])
    return block


def resolve(device: ModbusDevice, tags: Sequence[ModbusTag]) -> list[TagSpec]:
    out = []
    for i, tag in enumerate(tags):
        addr = tag.parsed(device.addressing)
        size = 1 if addr.is_bit_table else tag.registers
        out.append(TagSpec(tag.name, addr.table, addr.offset, size, addr.bit, tags, i))
    return out


def _limits(table: Table, max_gap: int, max_registers: int, max_bits: int) -> tuple[int, int]:
    if table in ("co", "di"):
        return max_gap * 16, max_bits
    return max_gap, max_registers


def build_blocks(
    specs: Sequence[TagSpec], *, max_gap: int, max_registers: int, max_bits: int
) -> list[Block]:
    blocks: list[Block] = []
    for table in TABLES:
        mine = sorted((s for s in specs if s.table == table), key=lambda s: (s.start, s.end))
        gap, limit = _limits(table, max_gap, max_registers, max_bits)
        group: list[TagSpec] = []
        first = end = 0
        for s in mine:
            if group and s.start - end <= gap and max(end, s.end) - first <= limit:
                group.append(s)
                end = max(end, s.end)
                continue
            if group:
                blocks.append(make_block(group))
            group, first, end = [s], s.start, s.end
        if group:
            blocks.append(make_block(group))
    return blocks


def minimum_requests(
    specs: Sequence[TagSpec], *, max_gap: int, max_registers: int, max_bits: int
) -> int:
    """The fewest requests any plan needs, by dynamic programming (a check on the greedy)."""
    total = 0
    for table in TABLES:
        mine = sorted((s for s in specs if s.table == table), key=lambda s: (s.start, s.end))
        gap, limit = _limits(table, max_gap, max_registers, max_bits)
        # best[i]: fewest requests covering the first i tags, where a request
        # covers a run of consecutive tags (in address order) that fits.
        best = [0] + [len(mine) + 1] * len(mine)
        for i in range(1, len(mine) + 1):
            for j in range(i - 1, -1, -1):
                if _fits(mine[j:i], gap, limit):
                    best[i] = min(best[i], best[j] + 1)
                elif mine[i - 1].end - mine[j].start > limit:
                    break  # earlier starts only make the request longer
        total += best[len(mine)]
    return total


def _fits(run: Sequence[TagSpec], gap: int, limit: int) -> bool:
    """Can one request read this run (sorted by start) of tags?"""
    end = run[0].end
    for s in run[1:]:
        if s.start - end > gap:
            return False
        end = max(end, s.end)
    return end - run[0].start <= limit


def split(block: Block) -> tuple[Block, Block] | None:
    """Halve a block along its tags; None when it cannot be split further."""
    clusters: list[list[TagSpec]] = []
    end = -1
    for s in sorted(block.specs, key=lambda s: (s.start, s.end)):
        if clusters and s.start < end:
            clusters[-1].append(s)  # overlaps (a bit inside a register): inseparable
        else:
            clusters.append([s])
        end = max(end, s.end)
    if len(clusters) < 2:
        return None
    half = len(clusters) // 2
    left = [s for c in clusters[:half] for s in c]
    right = [s for c in clusters[half:] for s in c]
    return make_block(left), make_block(right)


class Planner:
    """Plans per set of tags, cached; the driver may replace a plan's blocks."""

    def __init__(self, device: ModbusDevice) -> None:
        self.device = device
        self._specs = {s.name: s for s in resolve(device, device.tags)}
        self._plans: dict[tuple[str, ...] | None, list[Block]] = {}

    def spec(self, name: str) -> TagSpec | None:
        return self._specs.get(name)

    def plan(self, names: tuple[str, ...] | None = None) -> list[Block]:
        """The blocks for these tags (all when None); the same list object each time."""
        cached = self._plans.get(names)
        if cached is not None:
            return cached
        if names is None:
            specs = list(self._specs.values())
        else:
            specs = [self._specs[n] for n in dict.fromkeys(names) if n in self._specs]
        d = self.device
        blocks = build_blocks(
            specs, max_gap=d.max_gap, max_registers=d.max_registers, max_bits=d.max_bits
        )
        if len(self._plans) > 64:  # ad-hoc subsets from commissioning: keep it bounded
            self._plans.pop(next(k for k in self._plans if k is not None), None)
        self._plans[names] = blocks
        return blocks
