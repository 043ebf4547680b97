"""Entry point ``edge_agent.drivers: modbus``: cheap to import (no pymodbus)."""

from __future__ import annotations

from agent.driver import DeviceConfig, Driver, DriverContext, DriverPlugin
from drivers.modbus.options import ModbusDevice

__all__ = ["PLUGIN"]


def _factory(config: DeviceConfig, context: DriverContext) -> Driver:
    # pymodbus is imported here, when a Modbus device starts, not by `check`.
    from drivers.modbus.driver import ModbusDriver

    assert isinstance(config, ModbusDevice)
    return ModbusDriver(config, context)


PLUGIN = DriverPlugin(
    name="modbus",
    config_model=ModbusDevice,
    factory=_factory,
    description="Modbus TCP, RTU, ASCII and RTU over TCP",
)
