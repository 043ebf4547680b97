"""The ``opcua`` driver plugin.

Imports only the pydantic options: asyncua (about 30 MB and half a second)
is loaded by the factory, when a site actually has an OPC UA device.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.sdk.driver import DeviceConfig, Driver, DriverContext, DriverPlugin
from drivers.opcua.options import OpcuaDevice

__all__ = ["PLUGIN"]


def _factory(config: DeviceConfig, context: DriverContext) -> Driver:
    from drivers.opcua.driver import factory  # asyncua is imported here, not before

    return factory(config, context)


def _reports_by_exception(dev: OpcuaDevice) -> bool:
    return any((t.report or dev.report) == "change" for t in dev.tags)


def _check(devices: Sequence[DeviceConfig]) -> list[str]:
    """Site-level hints for ``edge-agent check``; never opens a connection."""
    warnings: list[str] = []
    by_endpoint: dict[str, list[str]] = {}
    for dev in devices:
        if not isinstance(dev, OpcuaDevice):
            continue
        by_endpoint.setdefault(dev.connection.endpoint.rstrip("/"), []).append(dev.name)
        ratio = (dev.publishing_interval or dev.interval) / dev.interval
        if dev.mode == "subscribe" and ratio > 10 and dev.queue_size < ratio:
            warnings.append(
                f"device {dev.name}: publishing_interval is over 10x the sampling interval; "
                "set queue_size so the samples in between are not dropped")
        if dev.mode == "subscribe" and _reports_by_exception(dev):
            warnings.append(
                f"note: device {dev.name}: report: change on a subscription: the server "
                "already sends only changes (the deadband goes to it as a DataChangeFilter); "
                "the agent filters what arrives once more, and judges heartbeat and "
                "stale_after only when a change arrives (a value that stands still is not "
                "sent again)")
    for endpoint, names in by_endpoint.items():
        if len(names) > 1:
            # Each device has its own session; PLC servers allow few (often 8..32).
            warnings.append(f"devices {', '.join(names)} each open a session to {endpoint}; "
                            "servers limit sessions, consider one device with all tags")
    return warnings


PLUGIN = DriverPlugin(
    name="opcua",
    config_model=OpcuaDevice,
    factory=_factory,
    check=_check,
    description="OPC UA client: poll or subscribe, secure channels, browse",
    address_field="node",
)
