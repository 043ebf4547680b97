"""A validated site keeps each device's tags by column (TagTable): same tags, less memory."""

from __future__ import annotations

import gc
import pickle
import tracemalloc
from typing import Any

import pytest
import yaml

from agent.config.load import parse_site
from agent.sdk.driver import DeviceConfig, TagConfig
from agent.sdk.tag_table import TagTable
from drivers.modbus.options import ModbusTag


def _site(tags: list[dict[str, Any]]) -> str:
    return yaml.safe_dump({
        "gateway": {"id": "gw", "site": "s"}, "uplink": {"mqtt": {"url": "mqtt://127.0.0.1:1"}},
        "devices": [{"name": "press", "driver": "modbus", "poll": "1s",
                     "connection": {"transport": "tcp", "host": "127.0.0.1", "port": 5020},
                     "tags": tags}]})


MIXED: list[dict[str, Any]] = [
    {"name": "temp", "address": "HR0", "type": "float32", "order": "CDAB", "unit": "degC",
     "deadband": 0.5},
    {"name": "speed", "address": "HR2", "type": "int16", "scale": 0.1, "writable": True,
     "min": 0, "max": 3000},
    {"name": "mode", "address": "HR3", "type": "uint16", "map": {0: "idle", 1: "run"}},
    {"name": "serial", "address": "HR4", "type": "string", "length": 4},
    {"name": "running", "address": "CO0", "type": "bool", "report": "change"},
]


def _plain(device: DeviceConfig) -> list[TagConfig]:
    """The device's tags as validation made them before: one model each."""
    return [type(t).model_validate(t.model_dump()) for t in device.tags]


def test_tags_come_back_as_the_models_validation_made() -> None:
    device = parse_site(_site(MIXED)).devices[0]
    table = device.tags
    assert isinstance(table, TagTable)
    plain = _plain(device)
    assert len(table) == 5 and list(table) == plain and table == plain and plain == table
    assert all(type(t) is ModbusTag for t in table)
    assert table[0] == plain[0] and table[-1] == plain[-1] and table[1:3] == plain[1:3]
    with pytest.raises(IndexError):
        table[5]
    speed = table[1]
    assert isinstance(speed, ModbusTag)
    assert (speed.scale, speed.writable, speed.min, speed.max) == (0.1, True, 0.0, 3000.0)
    # What the file gave, as pydantic tracks it (dumps with exclude_unset rely on it).
    assert speed.model_fields_set == {"name", "address", "type", "scale", "writable", "min", "max"}
    assert table[2].map == {0: "idle", 1: "run"}
    # Lookups by name scan the names; no tag is kept.
    assert device.tag_names() == ["temp", "speed", "mode", "serial", "running"]
    assert device.find_tag("serial") == plain[3] and device.find_tag("nope") is None
    assert device.tag_values("unit") == ["degC", None, None, None, None]
    with pytest.raises(AttributeError):
        device.tag_values("colour")
    # Frozen as before: a tag built from a row cannot be changed.
    with pytest.raises(ValueError, match="frozen"):
        speed.scale = 2.0  # type: ignore[misc]


def test_a_device_dumps_pickles_and_compares_as_with_a_list() -> None:
    device = parse_site(_site(MIXED)).devices[0]
    listed = device.model_copy(update={"tags": _plain(device)})
    assert device.model_dump() == listed.model_dump()
    assert device.model_dump_json() == listed.model_dump_json()
    assert device == listed and listed == device
    again = pickle.loads(pickle.dumps(device))  # noqa: S301 - our own bytes
    assert isinstance(again.tags, TagTable) and again == device
    other = parse_site(_site([*MIXED[:4], {**MIXED[4], "report": "always"}])).devices[0]
    assert other != device and other.tags != device.tags
    with pytest.raises(TypeError):
        hash(device.tags)  # as the list it stands for
    # `check` wants only the verdict: nothing is compacted for it.
    verdict = parse_site(_site(MIXED), keep=False).devices[0]
    assert isinstance(verdict.tags, list) and verdict == device


def test_a_tag_kept_in_a_table_costs_a_fraction_of_a_model() -> None:
    """The memory kept per tag, as the agent gets it (unpickled from the validator)."""
    count = 2000
    text = _site([{"name": f"r{i}", "address": f"HR{i}", "type": "uint16"}
                  for i in range(count)])
    device = parse_site(text).devices[0]
    as_rows = pickle.dumps(device)
    # Models holding the very same (shared) values: only the per-tag dict differs.
    as_models = pickle.dumps(device.model_copy(update={"tags": list(device.tags)}))

    def kept(blob: bytes) -> float:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            loaded = pickle.loads(blob)  # noqa: S301 - our own bytes
            size = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert loaded == device
        return size / count

    rows, models = kept(as_rows), kept(as_models)
    print(f"\nper tag: {rows:.0f} B in a table, {models:.0f} B as models ({rows / models:.2f}x)")
    # Measured: ~130 B against ~930 B (the name and address strings are most of it).
    assert rows < 0.4 * models, (rows, models)
