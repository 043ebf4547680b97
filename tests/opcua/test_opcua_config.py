"""OPC UA options through the real site loader; lazy import of asyncua."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.config.load import ConfigErrors, parse_site
from drivers.opcua.nodeid import UnknownNamespace, parse_node
from drivers.opcua.options import OpcuaConnection, OpcuaDevice, OpcuaTag

DRIVER_DIR = Path(__file__).resolve().parents[2] / "drivers" / "opcua"
HEAD = "gateway: {id: gw-1, site: plant}\nuplink: {mqtt: {url: mqtt://127.0.0.1}}\ndevices:\n"


def site(devices_yaml: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(devices_yaml).strip() + "\n", "  ")


def errors(devices_yaml: str) -> str:
    with pytest.raises(ConfigErrors) as err:
        parse_site(site(devices_yaml), "site.yaml")
    return err.value.render()


def test_sample_loads_through_the_real_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPCUA_PASSWORD", "from-env")
    loaded = parse_site(site((DRIVER_DIR / "sample.yaml").read_text()), "sample.yaml")
    plc, packer = loaded.devices
    assert isinstance(plc, OpcuaDevice) and isinstance(packer, OpcuaDevice)
    assert plc.connection.password is not None
    assert plc.connection.password.get_secret_value() == "from-env"
    assert (plc.mode, plc.interval, plc.poll, plc.publishing_interval) == ("subscribe", 0.5, 0.5, 1)
    assert (packer.mode, packer.poll) == ("poll", 2.0)
    assert plc.tag("temp").deadband_type == "percent"
    assert plc.tag("parts").sampling_interval == 0.1
    assert plc.tag("setpoint").writable and plc.tag("setpoint").max == 120


def test_readme_shows_the_sample_and_every_option() -> None:
    readme = (DRIVER_DIR / "README.md").read_text()
    assert (DRIVER_DIR / "sample.yaml").read_text().strip() in readme
    for model in (OpcuaDevice, OpcuaConnection, OpcuaTag):
        for key in model.model_fields:
            if key != "poll":  # documented as "do not set"
                assert f"`{key}`" in readme, f"{model.__name__}.{key} is not in the README"


@pytest.mark.parametrize(("yaml", "expected"), [
    ("""
     - name: p
       driver: opcua
       connection: {endpoint: "opc.tcp://h:4840", username: u, password: hunter2}
       tags: [{name: a, node: "i=1"}]
     """, "site.yaml:6: devices[0].connection.password: secrets must be given as ${env:NAME}"),
    ("""
     - name: p
       driver: opcua
       connection: {endpoint: "opc.tcp://h:4840"}
       tags:
         - {name: a, node: "ns=2;x=Speed"}
     """, "site.yaml:8: devices[0].tags[0].node: node 'ns=2;x=Speed' is not a NodeId"),
    ("""
     - name: p
       driver: opcua
       connection: {endpoint: "http://h:4840"}
       tags: [{name: a, node: "i=1"}]
     """, "devices[0].connection.endpoint: endpoint must start with opc.tcp://"),
    ("""
     - name: p
       driver: opcua
       connection: {endpoint: "opc.tcp://h", security: Basic256Sha256_SignAndEncrypt}
       tags: [{name: a, node: "i=1"}]
     """, "needs the server certificate pinned: set server_certificate"),
    ("""
     - name: p
       driver: opcua
       connection: {endpoint: "opc.tcp://h", trust_on_first_use: true}
       tags: [{name: a, node: "i=1"}]
     """, "server_certificate/trust_on_first_use need a secure policy"),
    ("""
     - name: p
       driver: opcua
       connection: {endpoint: "opc.tcp://h", security: Basic256Sha256}
       tags: [{name: a, node: "i=1"}]
     """, "devices[0].connection.security: Input should be 'None', 'Basic256Sha256_Sign'"),
    ("""
     - name: p
       driver: opcua
       connection: {endpoint: "opc.tcp://h"}
       poll: 1s
       tags: [{name: a, node: "i=1"}]
     """, "OPC UA devices use interval, not poll"),
    ("""
     - name: p
       driver: opcua
       connection: {endpoint: "opc.tcp://h"}
       tags: [{name: a, node: "i=1", deadband: 150, deadband_type: percent}]
     """, "a percent deadband must be 0..100"),
    ("""
     - name: p
       driver: opcua
       connection: {endpoint: "opc.tcp://h"}
       intervall: 1s
       tags: [{name: a, node: "i=1"}]
     """, "site.yaml:7: devices[0].intervall: unknown key 'intervall'; did you mean 'interval'?"),
])
def test_errors_a_technician_can_act_on(yaml: str, expected: str) -> None:
    assert expected in errors(yaml)


def test_node_forms() -> None:
    ref = parse_node("nsu=urn:line1;s=Line1.Speed")
    assert (ref.uri, ref.kind, ref.ident) == ("urn:line1", "s", "Line1.Speed")
    assert ref.resolve_index(["http://opcfoundation.org/UA/", "urn:x", "urn:line1"]) == 2
    with pytest.raises(UnknownNamespace):
        ref.resolve_index(["http://opcfoundation.org/UA/"])
    assert parse_node("ns=3;i=1001").resolve_index([]) == 3
    assert parse_node("i=2258").index == 0
    assert parse_node("ns=2;s=a;b=c").ident == "a;b=c"  # ';' inside a string identifier
    assert parse_node("ns=1;b=AQI=").ident == b"\x01\x02"
    for bad in ("ns=2;i=abc", "ns=70000;i=1", "ns=1;g=nope", "s=", "Line1.Speed"):
        with pytest.raises(ValueError):
            parse_node(bad)


def test_plugin_check_and_cli_do_not_import_asyncua(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(site((DRIVER_DIR / "sample.yaml").read_text()))
    code = textwrap.dedent(f"""
        import os, sys
        os.environ["OPCUA_PASSWORD"] = "x"
        import drivers.opcua.plugin
        from agent.cli.main import build_parser
        build_parser()  # registers `browse` from drivers.opcua.browse_cli
        from agent.config.load import load_site
        load_site({str(tmp_path / "site.yaml")!r})
        print("before", "asyncua" in sys.modules)
        from agent.sdk.driver import DriverContext
        from agent.sdk.counters import DeviceCounters
        import logging, pathlib
        site = load_site({str(tmp_path / "site.yaml")!r})
        drivers.opcua.plugin.PLUGIN.factory(site.devices[0], DriverContext(
            pathlib.Path("."), DeviceCounters(), logging.getLogger()))
        print("after", "asyncua" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["before", "False", "after", "True"]


def test_check_warns_about_shared_sessions_and_sparse_publishing() -> None:
    loaded = parse_site(site("""
        - name: a
          driver: opcua
          connection: {endpoint: "opc.tcp://plc:4840"}
          interval: 100ms
          publishing_interval: 5s
          tags: [{name: x, node: "i=1"}]
        - name: b
          driver: opcua
          connection: {endpoint: "opc.tcp://plc:4840/"}
          tags: [{name: x, node: "i=1"}]
        """), "site.yaml")
    assert loaded.warnings == (
        "device a: publishing_interval is over 10x the sampling interval; set queue_size so "
        "the samples in between are not dropped",
        "devices a, b each open a session to opc.tcp://plc:4840; servers limit sessions, "
        "consider one device with all tags",
    )
