"""Find driver plugins through the ``edge_agent.drivers`` entry-point group.

Validation (:func:`load_plugins`) reads every installed package's metadata
and imports each plugin's options model.  The running agent needs neither:
it gets from the validated site where each of its drivers lives
(``module:attribute``, :func:`plugin_refs`) and imports only those
(:class:`DriverCatalog`), so a Modbus-only gateway never holds
importlib.metadata (~2 MB with email, zipfile and csv) or OPC UA's models.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Iterator, Mapping

from agent.sdk.driver import DriverPlugin

__all__ = ["DRIVER_GROUP", "DriverCatalog", "PluginLoadError", "load_plugins", "plugin_refs"]

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
    for name, ref in plugin_refs().items():
        try:
            plugins[name] = import_plugin(ref)
        except Exception as err:
            plugins[name] = PluginLoadError(
                f"driver {name!r} ({ref}) failed to load: {type(err).__name__}: {err}"
            )
    return plugins


@functools.cache
def plugin_refs() -> dict[str, str]:
    """Every declared driver's ``module:attribute``, by name (nothing imported)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=DRIVER_GROUP)}


def import_plugin(ref: str) -> DriverPlugin:
    """The plugin object ``ref`` (``module:attribute``, as in an entry point) names."""
    module, _, attr = ref.partition(":")
    plugin: object = importlib.import_module(module.strip())
    for part in attr.strip().split(".") if attr.strip() else ():
        plugin = getattr(plugin, part)
    if not isinstance(plugin, DriverPlugin):
        raise TypeError(f"{ref} is not a DriverPlugin")
    return plugin


class DriverCatalog(Mapping[str, DriverPlugin]):
    """The drivers a running agent uses, each imported the first time it is asked for.

    ``refs`` come with each validated site (:attr:`Site.drivers`); a name
    without one (a site built in code) falls back to the full
    :func:`load_plugins`.  A driver that no longer imports is missing, as
    one whose entry point vanished: validation refused it already.
    """

    def __init__(self, refs: Mapping[str, str] | None = None) -> None:
        self._refs: dict[str, str] = dict(refs or {})
        self._loaded: dict[str, DriverPlugin] = {}

    def learn(self, refs: Mapping[str, str]) -> None:
        """Where the drivers of a newly accepted site live (a reload may add one)."""
        for name, ref in refs.items():
            if self._refs.get(name) != ref:
                self._refs[name] = ref
                self._loaded.pop(name, None)

    def __getitem__(self, name: str) -> DriverPlugin:
        plugin = self._loaded.get(name)
        if plugin is not None:
            return plugin
        ref = self._refs.get(name)
        if ref is None:
            found = load_plugins().get(name)
            if not isinstance(found, DriverPlugin):
                raise KeyError(name)
            plugin = found
        else:
            try:
                plugin = import_plugin(ref)
            except Exception as err:
                log.error("driver %r (%s) failed to load: %s: %s",
                          name, ref, type(err).__name__, err)
                raise KeyError(name) from err
        self._loaded[name] = plugin
        return plugin

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)
