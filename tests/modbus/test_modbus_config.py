"""The Modbus options through the real site loader: sample, errors with lines, bus checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.load import ConfigErrors, parse_site
from drivers.modbus.addressing import Address, parse_address
from drivers.modbus.options import ModbusDevice

HERE = Path(__file__).resolve().parents[2] / "drivers" / "modbus"
HEAD = "gateway: {id: gw-1, site: plant}\nuplink: {mqtt: {url: 'mqtt://127.0.0.1'}}\n"


def test_sample_yaml_loads_through_the_real_loader() -> None:
    site = parse_site(HEAD + (HERE / "sample.yaml").read_text(), "sample.yaml")
    names = [d.name for d in site.devices]
    assert names == ["press-1", "drive-7", "drive-8", "meter-3", "old-plc"]
    press = site.devices[0]
    assert isinstance(press, ModbusDevice)
    assert press.connection.timeout == 1.0
    assert [t.parsed() for t in press.tags][:4] == [
        Address("hr", 100), Address("hr", 102), Address("co", 0), Address("hr", 110, 3)
    ]
    drive8 = site.devices[2]
    assert isinstance(drive8, ModbusDevice)
    assert drive8.tags[0].parsed(drive8.addressing) == Address("ir", 3)
    assert any("RTU 19200 8E1" in w and "2 device(s)" in w for w in site.warnings)
    assert not any(w.startswith("warning: ") for w in site.warnings)


def test_readme_documents_every_option_and_embeds_the_sample() -> None:
    readme = (HERE / "README.md").read_text()
    assert (HERE / "sample.yaml").read_text().strip() in readme
    from drivers.modbus.options import (
        AsciiConnection,
        ModbusTag,
        RtuConnection,
        RtuOverTcpConnection,
        TcpConnection,
    )

    models = (ModbusDevice, ModbusTag, TcpConnection, RtuOverTcpConnection, RtuConnection,
              AsciiConnection)
    for model in models:
        for key in model.model_fields:
            assert f"`{key}`" in readme, f"README.md does not document {model.__name__}.{key}"


BAD = """devices:
  - name: d1
    driver: modbus
    connection:
      transport: tcp
      hots: 10.0.0.1
    max_registers: 200
    tags:
      - {name: a, address: HR100, type: float23}
      - {name: b, address: 40001.10}
      - {name: c, address: IR5, writable: true}
      - {name: d, address: 100}
      - {name: e, address: HR1.16}
      - {name: f, address: HR3, type: string}
      - {name: g, address: CO3, type: int16}
      - {name: h, address: "20001"}
  - name: d2
    driver: modbus
    connection: {transport: serial, port: /dev/ttyUSB0}
  - name: d3
    driver: modbus
    connection: {transport: rtu, port: /dev/ttyUSB0, parity: X, unit: 0, bytesize: 7}
"""


def test_config_errors_have_lines_and_plain_messages() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_site(HEAD + BAD, "site.yaml")
    text = str(info.value)
    expected = [
        "site.yaml:6: devices[0].connection.host: required key is missing",
        "site.yaml:8: devices[0].connection.hots: unknown key 'hots'; did you mean 'host'?",
        "site.yaml:9: devices[0].max_registers: ",
        "site.yaml:11: devices[0].tags[0].type: ",
        "site.yaml:12: devices[0].tags[1].address: 40001.1 was read as a number: put the "
        "address in quotes",
        "site.yaml:13: devices[0].tags[2]: discrete inputs and input registers are read-only",
        "site.yaml:14: devices[0].tags[3].address: 100 is ambiguous",
        "site.yaml:15: devices[0].tags[4].address: HR1.16: a register has bits 0 to 15",
        "site.yaml:16: devices[0].tags[5]: a string needs length",
        "site.yaml:17: devices[0].tags[6]: a coil (a single bit): type must be bool, not int16",
        "site.yaml:18: devices[0].tags[7].address: 20001: a Modicon number starts with 0",
        "site.yaml:21: devices[1].connection: transport: must be one of tcp, rtu, ascii, "
        "rtu_over_tcp",
        "site.yaml:24: devices[2].connection.parity: ",
        "site.yaml:24: devices[2].connection.unit: a unit on a serial line is 1 to 247",
        "site.yaml:24: devices[2].connection.bytesize: RTU frames are binary",
    ]
    for line in expected:
        assert line in text, f"missing {line!r} in\n{text}"


@pytest.mark.parametrize(
    ("raw", "base", "expected"),
    [
        ("HR100", "zero_based", Address("hr", 100)),
        ("hr100", "zero_based", Address("hr", 100)),
        ("HR110.3", "zero_based", Address("hr", 110, 3)),
        ("IR3", "zero_based", Address("ir", 3)),
        ("CO0", "zero_based", Address("co", 0)),
        ("DI12", "zero_based", Address("di", 12)),
        ("HR1", "one_based", Address("hr", 0)),
        ("00001", "zero_based", Address("co", 0)),
        ("10001", "zero_based", Address("di", 0)),
        ("30001", "zero_based", Address("ir", 0)),
        (40001, "zero_based", Address("hr", 0)),
        (40001, "one_based", Address("hr", 0)),  # Modicon is one-based regardless
        ("40101", "zero_based", Address("hr", 100)),
        ("400001", "zero_based", Address("hr", 0)),
        (465536, "zero_based", Address("hr", 65535)),
        ("040001", "zero_based", Address("co", 40000)),
        ("40001.3", "zero_based", Address("hr", 0, 3)),
    ],
)
def test_address_forms(raw: str | int, base: str, expected: Address) -> None:
    assert parse_address(raw, base) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("40000", "one-based"),
        ("HR0.3x", "not a Modbus address"),
        ("CO1.2", "bits already"),
        ("HR65536", "beyond"),
        (True, "address like"),
        (40001.5, "quotes"),
    ],
)
def test_bad_addresses(raw: str | int | float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(raw)


def _bus_site(poll: str, baud: int, second_baud: int | None = None) -> str:
    tags = "\n".join(
        f"      - {{name: t{i}, address: HR{i * 200}, type: float32}}" for i in range(20)
    )
    dev = """  - name: {name}
    driver: modbus
    connection: {{transport: rtu, port: /dev/ttyUSB0, baudrate: {baud}, unit: {unit}}}
    poll: {poll}
    tags:
{tags}
"""
    return HEAD + "devices:\n" + "".join(
        dev.format(name=f"d{u}", baud=(second_baud if u == 2 and second_baud else baud),
                   unit=u, poll=poll, tags=tags)
        for u in (1, 2)
    )


def test_feasibility_check_with_numbers() -> None:
    fine = parse_site(_bus_site("10s", 115200))
    assert len(fine.warnings) == 1 and not fine.warnings[0].startswith("warning: ")
    assert "40 request(s)" in fine.warnings[0]
    # 40 requests at 1200 baud: 17 characters each way, ~0.3 s each: not in 1 s.
    slow = parse_site(_bus_site("1s", 1200))
    warnings = [w for w in slow.warnings if w.startswith("warning: ")]
    assert any("infeasible" in w and "/dev/ttyUSB0" in w for w in warnings)
    assert any("device d1" in w and "longer than its poll of 1000 ms" in w for w in warnings)
    mixed = parse_site(_bus_site("10s", 19200, 9600))
    assert any("d2 says RTU 9600" in w for w in mixed.warnings)


def test_feasibility_warns_when_the_timeout_is_shorter_than_the_answer() -> None:
    tags = ", ".join(f"{{name: r{i}, address: HR{i}}}" for i in range(125))
    site = parse_site(HEAD + f"""devices:
  - name: slow
    driver: modbus
    connection: {{transport: rtu, port: /dev/ttyS0, baudrate: 1200, timeout: 1s}}
    poll: 1m
    tags: [{tags}]
""")
    # 125 registers answer in 255 characters: 2.1 s at 1200 baud.
    warning = next(w for w in site.warnings if "timeout" in w and w.startswith("warning: "))
    assert "timeout 1000 ms is shorter than its longest request" in warning
    assert "(2" in warning  # 2xxx ms
    summary = next(w for w in site.warnings if w.startswith("modbus bus /dev/ttyS0"))
    assert "holds the bus 2000 ms once, then 1000 ms per probe" in summary
