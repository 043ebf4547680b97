"""Entry point of the serial driver (``edge_agent.drivers`` -> ``serial``).

Imports only the options model; pyserial is imported when a device starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.sdk.driver import DeviceConfig, Driver, DriverContext, DriverPlugin
from drivers.serial.options import SerialDevice

__all__ = ["PLUGIN"]


def _factory(config: DeviceConfig, context: DriverContext) -> Driver:
    from drivers.serial.driver import SerialDriver

    return SerialDriver(config, context)


def _check(devices: Sequence[DeviceConfig]) -> list[str]:
    # Ports are opened exclusively; only poll devices with equal line and
    # frame settings can share one (RS-485 multi-drop).  Anything else would
    # leave the second device down for ever, which `check` can say up front.
    first: dict[str, SerialDevice] = {}
    warnings = []
    for device in devices:
        if not isinstance(device, SerialDevice):
            continue
        port = device.connection.port
        other = first.setdefault(port, device)
        if other is device:
            continue
        if "stream" in (device.mode, other.mode):
            why = "a stream device cannot share its port"
        elif device.connection != other.connection or device.frame != other.frame:
            why = "devices sharing a port need equal connection and frame settings"
        else:
            continue
        warnings.append(f"devices {other.name} and {device.name} both use serial port {port}: "
                        f"{why}; {device.name} will stay down")
    return warnings


PLUGIN = DriverPlugin(
    name="serial",
    config_model=SerialDevice,
    factory=_factory,
    check=_check,
    description="ASCII instruments on a serial line: stream or poll, regex parsing",
    address_field="group",
)
