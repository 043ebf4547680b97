"""Driver discovery: built-ins come through entry points; a broken one is named."""

from __future__ import annotations

import pytest

from agent.config import load
from agent.config.load import ConfigErrors, parse_site
from agent.config.plugins import PluginLoadError, load_plugins
from agent.sdk.driver import DriverPlugin

SITE = """gateway: {id: gw-1, site: s}
uplink:
  mqtt: {url: "mqtt://127.0.0.1:1883"}
devices:
  - {name: plc, driver: broken, tags: []}
"""


def test_builtin_drivers_are_entry_points() -> None:
    plugins = load_plugins()
    for name in ("modbus", "opcua", "serial"):
        assert isinstance(plugins[name], DriverPlugin), plugins[name]
        assert plugins[name].name == name  # type: ignore[union-attr]


def test_a_driver_that_fails_to_import_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = PluginLoadError("driver 'broken' (acme.edge:PLUGIN) failed to load: "
                             "ModuleNotFoundError: No module named 'acme'")
    monkeypatch.setattr(load, "load_plugins", lambda: {**load_plugins(), "broken": broken})
    with pytest.raises(ConfigErrors) as exc:
        parse_site(SITE, "site.yaml")
    assert exc.value.render() == (
        "site.yaml:5: devices[0].driver: driver 'broken' (acme.edge:PLUGIN) failed to load: "
        "ModuleNotFoundError: No module named 'acme'"
    )
