"""Find driver plugins through the ``edge_agent.drivers`` entry-point group."""

from __future__ import annotations

import functools
import logging
from importlib.metadata import entry_points

from agent.sdk.driver import DriverPlugin

__all__ = ["DRIVER_GROUP", "PluginLoadError", "load_plugins"]

DRIVER_GROUP = "edge_agent.drivers"
log = logging.getLogger("agent.registry")


class PluginLoadError(Exception):
    """A declared driver that could not be imported; reported, never skipped."""


@functools.cache
def load_plugins() -> dict[str, DriverPlugin | PluginLoadError]:
    """Every declared driver by name; a broken one maps to its load error.

    Loading a plugin imports only its options model; the protocol library
    is imported when a device of that driver is started.
    """
    plugins: dict[str, DriverPlugin | PluginLoadError] = {}
    for ep in entry_points(group=DRIVER_GROUP):
        try:
            plugin = ep.load()
            if not isinstance(plugin, DriverPlugin):
                raise TypeError(f"{ep.value} is not a DriverPlugin")
            plugins[ep.name] = plugin
        except Exception as err:
            plugins[ep.name] = PluginLoadError(
                f"driver {ep.name!r} ({ep.value}) failed to load: {type(err).__name__}: {err}"
            )
    return plugins
