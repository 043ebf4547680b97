"""Entry point of the serial driver (``edge_agent.drivers`` -> ``serial``).

Imports only the options model; pyserial is imported when a device starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.driver import DeviceConfig, Driver, DriverContext, DriverPlugin
from drivers.serial.options import SerialDevice

__all__ = ["PLUGIN"]


def _factory(config: DeviceConfig, context: DriverContext) -> Driver:
    from drivers.serial.driver import SerialDriver

    return SerialDriver(config, context)


def _check(devices: Sequence[DeviceConfig]) -> list[str]:
    # Ports are opened exclusively: a second device on the same port would
    # stay down for ever, which `check` can say before anything starts.
    first: dict[str, str] = {}
    warnings = []
    for device in devices:
        if not isinstance(device, SerialDevice):
            continue
        port = device.connection.port
        if port in first:
            warnings.append(
                f"devices {first[port]} and {device.name} both use serial port {port}; "
                "a port is opened by one device only, the second will stay down"
            )
        else:
            first[port] = device.name
    return warnings


PLUGIN = DriverPlugin(
    name="serial",
    config_model=SerialDevice,
    factory=_factory,
    check=_check,
    description="ASCII instruments on a serial line: stream or poll, regex parsing",
    address_field="group",
)
