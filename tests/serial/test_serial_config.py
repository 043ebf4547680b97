"""Serial options through the real site loader: samples, and errors a technician reads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.config.load import ConfigErrors, parse_site
from drivers.serial.options import SerialDevice
from drivers.serial.plugin import PLUGIN

DRIVER_DIR = Path(__file__).resolve().parents[2] / "drivers" / "serial"
HEAD = "gateway: {id: gw-1, site: plant}\nuplink: {mqtt: {url: 'mqtt://localhost'}}\ndevices:\n"


def site(devices_yaml: str) -> str:
    # Line 4 of the result is the first device's "- name:" line.
    return HEAD + textwrap.indent(textwrap.dedent(devices_yaml).strip("\n"), "  ") + "\n"


def errors(devices_yaml: str) -> str:
    with pytest.raises(ConfigErrors) as exc:
        parse_site(site(devices_yaml), "site.yaml")
    return exc.value.render()


@pytest.mark.parametrize("name", ["sample.yaml", "sample-nmea.yaml"])
def test_samples_load_through_the_real_loader(name: str) -> None:
    loaded = parse_site(site((DRIVER_DIR / name).read_text()), name)
    assert loaded.devices and all(isinstance(d, SerialDevice) for d in loaded.devices)
    assert not loaded.warnings


def test_sample_values() -> None:
    scale, = parse_site(site((DRIVER_DIR / "sample.yaml").read_text())).devices
    assert isinstance(scale, SerialDevice)
    assert scale.frame.end == b"\r\n" and scale.mode == "stream" and scale.sample == "latest"
    air, = parse_site(site((DRIVER_DIR / "sample-nmea.yaml").read_text())).devices
    assert isinstance(air, SerialDevice)
    assert air.request == "R\r\n" and air.timeout == 0.3 and air.checksum is not None
    assert air.checksum.type == "nmea" and len(air.parse) == 2


@pytest.mark.parametrize("name", ["sample.yaml", "sample-nmea.yaml"])
def test_readme_shows_each_sample_verbatim(name: str) -> None:
    readme = (DRIVER_DIR / "README.md").read_text()
    assert (DRIVER_DIR / name).read_text().strip() in readme


def test_readme_documents_every_option() -> None:
    readme = (DRIVER_DIR / "README.md").read_text()
    from drivers.serial.options import ChecksumConfig, FrameConfig, SerialConnection, SerialTag

    for model in (SerialDevice, SerialConnection, FrameConfig, ChecksumConfig, SerialTag):
        for key in model.model_fields:
            assert f"`{key}`" in readme, f"{model.__name__}.{key} is not in the README"


def test_yaml_escapes_become_bytes() -> None:
    dev, = parse_site(site(r"""
        - name: bal
          driver: serial
          connection: {port: /dev/ttyS0, parity: even, stopbits: 1.5}
          frame: {start: "\x02", terminator: "\x03"}
          parse: {regex: '(?P<w>\d+)'}
          tags: [{name: w, type: int}]
    """)).devices
    assert isinstance(dev, SerialDevice)
    assert dev.frame.start == "\x02" and dev.frame.end == b"\x03"
    assert dev.connection.parity == "E" and dev.connection.stopbits == 1.5


@pytest.mark.parametrize(("yaml_text", "line", "message"), [
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       mode: poll
       parse: {regex: '(?P<w>\\d+)'}
       tags: [{name: w, type: int}]
     """, 4, "mode poll needs a request"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       parse:
         regex: '(?P<w>\\d+'
       tags: [{name: w, type: int}]
     """, 8, "invalid regex"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       parse: {regex: '(?P<w>\\d+)'}
       tags: [{name: x, type: int}]
     """, 4, "no regex has a group named 'x'"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       parse: {regex: '(?P<w>\\d+)'}
       tags:
         - {name: w}
     """, 9, "give a type"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       checksum: crc32
       parse: {regex: '(?P<w>\\d+)'}
       tags: [{name: w, type: int}]
     """, 7, "unknown checksum 'crc32'"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0, stopbits: 3}
       parse: {regex: '(?P<w>\\d+)'}
       tags: [{name: w, type: int}]
     """, 6, "stopbits must be 1, 1.5 or 2"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       frame: {terminator: "\\u20ac"}
       parse: {regex: '(?P<w>\\d+)'}
       tags: [{name: w, type: int}]
     """, 7, "byte values"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       mode: poll
       request: "R\\r"
       timeout: 2s
       poll: 1s
       parse: {regex: '(?P<w>\\d+)'}
       tags: [{name: w, type: int}]
     """, 4, "must be shorter than poll"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       parse: {regex: '(?P<s>\\w+)'}
       tags: [{name: s, type: int, map: {A: yes}}]
     """, 8, "map value for 'A' is not a int"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       parse: {regex: '(?P<w>\\d+)'}
       tags: [{name: w, type: int, writable: true}]
     """, 8, "read-only"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       parse: '(?P<w>\\d+)'
       tags: [{name: w, type: int}]
     """, 7, "write parse: {regex:"),
    ("""
     - name: a
       driver: serial
       connection: {port: /dev/ttyS0}
       frame: {terminatr: "\\n"}
       parse: {regex: '(?P<w>\\d+)'}
       tags: [{name: w, type: int}]
     """, 7, "did you mean 'terminator'"),
])
def test_config_errors_name_the_line_and_the_fix(yaml_text: str, line: int, message: str) -> None:
    text = errors(yaml_text)
    assert message in text
    assert f"site.yaml:{line}:" in text, text


def test_check_warns_about_two_devices_on_one_port() -> None:
    loaded = parse_site(site("""
        - name: a
          driver: serial
          connection: {port: /dev/ttyUSB0}
          parse: {regex: '(?P<w>\\d+)'}
          tags: [{name: w, type: int}]
        - name: b
          driver: serial
          connection: {port: /dev/ttyUSB0}
          parse: {regex: '(?P<w>\\d+)'}
          tags: [{name: w, type: int}]
    """))
    assert len(loaded.warnings) == 1 and "/dev/ttyUSB0" in loaded.warnings[0]
    assert PLUGIN.check is not None


def test_plugin_import_is_cheap() -> None:
    import subprocess
    import sys

    code = ("import sys, drivers.serial.plugin; "
            "print(any(m == 'serial' or m.startswith('serial_asyncio') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_yaml_example_in_the_readme_loads() -> None:
    import re

    readme = (DRIVER_DIR / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "driver: serial" in b]
    assert len(blocks) >= 4
    for block in blocks:
        loaded = parse_site(site(block), "README.md")
        assert loaded.devices and not loaded.warnings, block
