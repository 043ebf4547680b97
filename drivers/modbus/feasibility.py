"""`edge-agent check` for serial buses: can the wire carry the configured polls?

For every serial port we add up, per poll period, the time each planned
request occupies the line: request and response frames in characters
(start bit + data bits + parity + stop bits each), the RTU inter-frame
silence before each frame, the device's reaction time (assumed
``REACTION`` seconds; manuals say 5-50 ms) and the device's ``pause``.
Nothing is opened: this is arithmetic on the validated config.
"""

from __future__ import annotations

from collections.abc import Sequence

from drivers.modbus.options import AsciiConnection, ModbusDevice, RtuConnection
from drivers.modbus.planning import Block, Planner

__all__ = ["REACTION", "check_buses", "request_seconds"]

#: Assumed time a device takes to start answering (not in any frame size).
REACTION = 0.010


def _char_bits(conn: RtuConnection | AsciiConnection) -> int:
    return 1 + conn.bytesize + (0 if conn.parity == "N" else 1) + conn.stopbits


def _frame_chars(conn: RtuConnection | AsciiConnection, binary: int) -> int:
    """Characters on the wire for a frame of ``binary`` bytes (unit id .. data, no check)."""
    if isinstance(conn, AsciiConnection):
        return 1 + 2 * (binary + 1) + 2  # ':' + hex of bytes and LRC + CR LF
    return binary + 2  # + CRC


def request_seconds(conn: RtuConnection | AsciiConnection, block: Block) -> float:
    """Wire time of one read request and its answer, pause included."""
    data = 2 * block.count if block.table in ("hr", "ir") else (block.count + 7) // 8
    chars = _frame_chars(conn, 6) + _frame_chars(conn, 3 + data)
    char_time = _char_bits(conn) / conn.baudrate
    silence = 0.0
    if isinstance(conn, RtuConnection):
        silence = 2 * (0.00175 if conn.baudrate > 19200 else 3.5 * char_time)
    return chars * char_time + silence + REACTION + conn.pause


def _settings(conn: RtuConnection | AsciiConnection) -> str:
    return f"{conn.transport.upper()} {conn.baudrate} {conn.bytesize}{conn.parity}{conn.stopbits}"


def check_buses(devices: Sequence[ModbusDevice]) -> list[str]:
    lines: list[str] = []
    buses: dict[str, list[ModbusDevice]] = {}
    for dev in devices:
        if isinstance(dev.connection, RtuConnection | AsciiConnection):
            buses.setdefault(dev.connection.port, []).append(dev)
    for port, group in buses.items():
        first = group[0].connection
        assert isinstance(first, RtuConnection | AsciiConnection)
        for dev in group[1:]:
            conn = dev.connection
            assert isinstance(conn, RtuConnection | AsciiConnection)
            if _settings(conn) != _settings(first):
                lines.append(
                    f"warning: modbus bus {port}: device {dev.name} says {_settings(conn)} but "
                    f"{group[0].name} says {_settings(first)}; one port has one setting "
                    f"(the first device's is used)"
                )
        load = 0.0
        requests = 0
        outage = probe = 0.0
        for dev in group:
            conn = dev.connection
            assert isinstance(conn, RtuConnection | AsciiConnection)
            blocks = Planner(dev).plan(None)
            scan = sum(request_seconds(first, b) for b in blocks)
            requests += len(blocks)
            load += scan / dev.poll
            if scan > dev.poll:
                lines.append(
                    f"warning: modbus device {dev.name} on {port}: one scan takes "
                    f"{scan * 1000:.0f} ms ({len(blocks)} requests at {first.baudrate} baud), "
                    f"longer than its poll of {dev.poll * 1000:.0f} ms"
                )
            longest = max((request_seconds(first, b) - conn.pause for b in blocks), default=0.0)
            if longest > conn.timeout:
                lines.append(
                    f"warning: modbus device {dev.name} on {port}: timeout "
                    f"{conn.timeout * 1000:.0f} ms is shorter than its longest request takes "
                    f"on the wire ({longest * 1000:.0f} ms at {first.baudrate} baud); every such "
                    "read would time out"
                )
            # What a unit that stops answering costs the others: the first scan
            # waits out every retry, later ones one timeout per probe.
            outage = max(outage, conn.timeout * (conn.retries + 1))
            probe = max(probe, conn.timeout)
        summary = (
            f"modbus bus {port} ({_settings(first)}): {len(group)} device(s), {requests} "
            f"request(s) per round, wire busy {load * 100:.0f}% at the configured polls "
            f"(assuming {REACTION * 1000:.0f} ms device reaction); a unit that stops "
            f"answering holds the bus {outage * 1000:.0f} ms once, then {probe * 1000:.0f} ms "
            "per probe (probes back off from 1 s)"
        )
        if load > 1.0:
            lines.append(
                f"warning: {summary}: infeasible, the polls need {load:.2f} s of wire time per "
                "second; poll less often, raise the baudrate or split the bus"
            )
        else:
            lines.append(summary)
    return lines
