"""Datatypes, quality and report by exception in DDATA, the DBIRTH size check,
and protobuf staying out of JSON sites. Payloads are decoded with the generated module."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.load import ConfigErrors, parse_site
from agent.pipeline.encoders.sparkplug import datatypes as dt
from agent.pipeline.sparkplug.devices import AliasTable, DeviceModel
from drivers.modbus.options import ModbusDevice
from tests.sparkplug.helpers_sparkplug import decode, press, site_dict

ROOT = Path(__file__).resolve().parents[2]


def model(tags: list[dict[str, Any]], latest: dict[str, Any] | None = None) -> DeviceModel:
    cfg = ModbusDevice.model_validate(press(502) | {"tags": tags})
    return DeviceModel(cfg, AliasTable(), latest or {})


@pytest.mark.parametrize(("tag", "datatype"), [
    ({"type": "bool", "address": "CO1"}, dt.BOOLEAN),
    ({"type": "int16"}, dt.INT16), ({"type": "uint16"}, dt.UINT16),
    ({"type": "int32"}, dt.INT32), ({"type": "uint32"}, dt.UINT32),
    ({"type": "int64"}, dt.INT64), ({"type": "uint64"}, dt.UINT64),
    ({"type": "float32"}, dt.FLOAT), ({"type": "float64"}, dt.DOUBLE),
    ({"type": "string", "length": 4}, dt.STRING),
    ({}, dt.UINT16),                                     # a register's default
    ({"type": "int16", "scale": 0.1}, dt.DOUBLE),        # scaled: a double
    ({"type": "uint16", "map": {0: "stopped", 1: "running"}}, dt.STRING),
])
def test_datatype_table(tag: dict[str, Any], datatype: int) -> None:
    m = model([{"name": "t", "address": "HR1", **tag}])
    assert m.tags["t"].datatype == datatype


@pytest.mark.parametrize(("datatype", "value", "field", "wire"), [
    (dt.INT16, -2, "int_value", 0xFFFFFFFE),             # two's complement, sign-extended
    (dt.INT32, -2147483648, "int_value", 0x80000000),
    (dt.INT64, -1, "long_value", 0xFFFFFFFFFFFFFFFF),
    (dt.UINT64, 2**64 - 1, "long_value", 2**64 - 1),
    (dt.FLOAT, 1.5, "float_value", 1.5),
    (dt.DOUBLE, 0.1, "double_value", 0.1),
    (dt.BOOLEAN, True, "boolean_value", True),
    (dt.STRING, "ST", "string_value", "ST"),
    (dt.DOUBLE_ARRAY, [1.0, 2.5], "bytes_value", struct.pack("<2d", 1.0, 2.5)),
    (dt.INT16_ARRAY, [-1, 2], "bytes_value", struct.pack("<2h", -1, 2)),
    (dt.BOOLEAN_ARRAY, [True, False, True], "bytes_value", struct.pack("<I", 3) + b"\xa0"),
    (dt.STRING_ARRAY, ["a", "bc"], "bytes_value", b"a\0bc\0"),
])
def test_values_on_the_wire(datatype: int, value: Any, field: str, wire: Any) -> None:
    from agent.pipeline.encoders.sparkplug.encode import Payload, add_metric

    p = Payload()
    assert add_metric(p, alias=5, datatype=datatype, value=value, ts=1)
    got = decode(p.SerializeToString()).metrics[0]
    assert got.WhichOneof("value") == field and getattr(got, field) == wire


def test_arrays_are_typed_from_their_values() -> None:
    assert dt.datatype_of_value([1.0, 2]) == dt.DOUBLE_ARRAY
    assert dt.datatype_of_value([True]) == dt.BOOLEAN_ARRAY
    assert dt.datatype_of_value(["x"]) == dt.STRING_ARRAY
    assert dt.datatype_of_value([1, 2]) == dt.INT64_ARRAY


def batch(*samples: dict[str, Any]) -> bytes:
    return json.dumps(list(samples)).encode()


def test_tck_id_payloads_propertyset_quality_bad_is_null_then_good() -> None:
    m = model([{"name": "a", "address": "HR1", "type": "int16"},
               {"name": "b", "address": "HR2", "type": "int16"}],
              latest={"a": (1, 10, None, None), "b": (2, 10, None, None)})
    m.birth({"a": (1, 10, None, None), "b": (2, 10, None, None)}, seq=1, now=10)
    a, b = m.tags["a"].alias, m.tags["b"].alias
    payload, n = m.data(batch(
        {"ts": 20, "values": {"a": 1, "b": 3}},                                   # a unchanged
        {"ts": 30, "values": {"a": None, "b": 3}, "bad": {"a": "timeout"}},       # a goes bad
        {"ts": 40, "values": {"a": 5, "b": 3}, "uncertain": {"a": "stale"}},
        {"ts": 50, "values": {"a": 5, "b": 3}},                                   # back to good
    ), now=60, historical=False)
    got = decode(payload.SerializeToString()).metrics
    assert n == len(got) == 4, "only changes are sent"
    assert [(x.alias, x.timestamp) for x in got] == [(b, 20), (a, 30), (a, 40), (a, 50)]
    bad = got[1]
    assert bad.is_null and list(bad.properties.keys) == ["Quality"]
    assert bad.properties.values[0].type == dt.INT32 and bad.properties.values[0].int_value == 0
    assert got[2].int_value == 5 and got[2].properties.values[0].int_value == 500
    assert got[3].properties.values[0].int_value == 192
    assert not got[0].properties.keys, "no quality property while it stays good"
    # History: every reading, marked historical, the live state untouched.
    hist, n = m.data(batch({"ts": 5, "values": {"a": 1, "b": 2}}), now=70, historical=True)
    got = decode(hist.SerializeToString()).metrics
    assert n == 2 and all(x.is_historical for x in got)
    assert m.tags["a"].last == 5


def test_bytes_per_changed_reading_is_small() -> None:
    m = model([{"name": f"t{i}", "address": f"HR{i}", "type": "float32"} for i in range(100)])
    samples = [{"ts": 1_764_000_000_000 + k, "values": {f"t{i}": k + i / 10 for i in range(100)}}
               for k in range(10)]
    payload, n = m.data(batch(*samples), now=1_764_000_000_100, historical=False)
    per = len(payload.SerializeToString()) / n
    # alias, an 8-byte ms timestamp varint and a float: ~15 bytes (see the benchmark).
    assert per < 18, per


def test_dbirth_over_max_message_is_a_config_error_naming_the_device() -> None:
    tags = [{"name": f"a_rather_long_tag_name_{i}", "address": f"HR{i}", "unit": "degC"}
            for i in range(40)]
    site = site_dict("mqtt://127.0.0.1:1883", [press(502) | {"tags": tags}], max_message="1KB")
    text = yaml.safe_dump(site, sort_keys=False)
    with pytest.raises(ConfigErrors) as err:
        parse_site(text, "site.yaml")
    msg = str(err.value)
    assert "DBIRTH of device 'press'" in msg and "max_message" in msg
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "name: press" in t)
    assert msg.startswith(f"site.yaml:{line}: devices[0].name:"), msg
    # The same device fits the default 128KB, and the bound holds for the real DBIRTH.
    ok = parse_site(yaml.safe_dump(site_dict("mqtt://127.0.0.1:1883", [press(502) | {"tags": tags}])))
    from agent.config.sparkplug import dbirth_size_bound

    real = DeviceModel(ok.devices[0], AliasTable(), {})
    size = len(real.birth({}, seq=1, now=1_764_000_000_000).SerializeToString())
    assert size <= dbirth_size_bound(ok.devices[0])


def test_a_json_site_never_imports_protobuf(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({**site_dict("mqtt://127.0.0.1:1", [press(502)]),
                                    "uplink": {"mqtt": {"url": "mqtt://127.0.0.1:1"}}}))
    sp = tmp_path / "sp.yaml"
    sp.write_text(yaml.safe_dump(site_dict("mqtt://127.0.0.1:1", [press(502)])))
    code = f"""
import asyncio, sys
from pathlib import Path
from agent.config.load import load_site
from agent.runtime.agent import Agent
from agent.management import attach_management
async def main():
    agent = Agent(load_site({str(site)!r}), Path({str(tmp_path / "state")!r}))
    attach_management(agent, config_path=None)
    agent.uplink._client_args(agent.uplink.endpoint)
    load_site({str(sp)!r})  # checking a sparkplug_b file does not load it either
    assert "google.protobuf" not in sys.modules, "protobuf imported"
    sp_agent = Agent(load_site({str(sp)!r}), Path({str(tmp_path / "state2")!r}))
    sp_agent.uplink._client_args(sp_agent.uplink.endpoint)
    assert "google.protobuf" in sys.modules, "the test proves nothing"
asyncio.run(main())
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_sparkplug_keys_need_the_format() -> None:
    site = site_dict("mqtt://127.0.0.1:1883", [press(502)], sparkplug={"group": "g"})
    site["uplink"]["mqtt"]["format"] = "json"
    with pytest.raises(ConfigErrors, match=r"uplink.mqtt.sparkplug: sparkplug settings need format"):
        parse_site(yaml.safe_dump(site), "site.yaml")
    site["uplink"]["mqtt"]["format"] = "sparkplug_b"
    site["uplink"]["mqtt"]["sparkplug"] = {"group": "a/b"}
    with pytest.raises(ConfigErrors, match=r"uplink.mqtt.sparkplug.group: use only letters"):
        parse_site(yaml.safe_dump(site), "site.yaml")


def test_a_tag_without_a_declared_type_is_born_with_its_first_value_type() -> None:
    from agent.sdk.driver import DeviceConfig, TagConfig

    cfg = DeviceConfig(name="plc", driver="opcua", tags=[TagConfig(name="speed")])
    m = DeviceModel(cfg, AliasTable(), {"speed": (1.5, 1, None, None)})
    assert m.tags["speed"].datatype == dt.DOUBLE and m.tags["speed"].inferred
    payload, _ = m.data(batch({"ts": 2, "values": {"speed": 2.5}}), now=3, historical=False)
    assert not m.needs_rebirth
    payload, _ = m.data(batch({"ts": 4, "values": {"speed": "fault"}}), now=5, historical=False)
    assert m.needs_rebirth, "a value of another type needs a new DBIRTH"
    got = decode(payload.SerializeToString()).metrics[0]
    assert got.string_value == "fault" and m.tags["speed"].datatype == dt.STRING
    again = DeviceModel(cfg, AliasTable(), {"speed": ("fault", 4, None, None)})
    assert again.tags["speed"].datatype == dt.STRING


def test_report_always_sends_every_reading_and_events_are_skipped() -> None:
    m = model([{"name": "a", "address": "HR1", "type": "int16", "report": "always"},
               {"name": "b", "address": "HR2", "type": "int16"}])
    m.birth({"a": (1, 1, None, None), "b": (2, 1, None, None)}, seq=1, now=1)
    stored = (b'[{"ts":2,"values":{"a":1,"b":2}},{"ts":3,"values":{"a":1,"b":2}}]'
              b',"events":[{"ts":3,"alarm":"hot","state":"active"}]')
    payload, n = m.data(stored, now=4, historical=False)
    got = decode(payload.SerializeToString()).metrics
    assert n == 2 and [x.alias for x in got] == [m.tags["a"].alias] * 2, \
        "report: always sends repeats; the default (change) does not"
