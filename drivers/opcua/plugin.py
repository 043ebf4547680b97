"""The ``opcua`` driver plugin.

Imports only the pydantic options: asyncua (about 30 MB and half a second)
is loaded by the factory, when a site actually has an OPC UA device.
"""

from __future__ import annotations

from agent.driver import DeviceConfig, Driver, DriverContext, DriverPlugin
from drivers.opcua.options import OpcuaDevice

__all__ = ["PLUGIN"]


def _factory(config: DeviceConfig, context: DriverContext) -> Driver:
    from drivers.opcua.driver import factory  # asyncua is imported here, not before

    return factory(config, context)


PLUGIN = DriverPlugin(
    name="opcua",
    config_model=OpcuaDevice,
    factory=_factory,
    description="OPC UA client: poll or subscribe, secure channels, browse",
    address_field="node",
)
