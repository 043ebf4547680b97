"""Entry point ``edge_agent.drivers: modbus``: cheap to import (no pymodbus)."""

from __future__ import annotations

from collections.abc import Sequence

from agent.sdk.driver import DeviceConfig, Driver, DriverContext, DriverPlugin
from drivers.modbus.options import ModbusDevice

__all__ = ["PLUGIN"]


def _factory(config: DeviceConfig, context: DriverContext) -> Driver:
    # pymodbus is imported here, when a Modbus device starts, not by `check`.
    from drivers.modbus.driver import ModbusDriver

    assert isinstance(config, ModbusDevice)
    return ModbusDriver(config, context)


def _check(devices: Sequence[DeviceConfig]) -> list[str]:
    """Serial bus load and consistency; 'warning: ' lines when a poll cannot be met."""
    from drivers.modbus.feasibility import check_buses

    return check_buses([d for d in devices if isinstance(d, ModbusDevice)])


PLUGIN = DriverPlugin(
    name="modbus",
    config_model=ModbusDevice,
    factory=_factory,
    check=_check,
    description="Modbus TCP, RTU, ASCII and RTU over TCP",
)
