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


def test_the_driver_catalog_imports_only_the_drivers_it_is_asked_for(
        caplog: pytest.LogCaptureFixture) -> None:
    from agent.config.plugins import DriverCatalog

    catalog = DriverCatalog({"modbus": "drivers.modbus.plugin:PLUGIN",
                             "gone": "no_such_module_here:PLUGIN"})
    assert sorted(catalog) == ["gone", "modbus"] and len(catalog) == 2
    assert catalog["modbus"] is load_plugins()["modbus"]
    # A ref that no longer imports is missing, said once in the log.
    with caplog.at_level("ERROR"):
        assert catalog.get("gone") is None
    assert "no_such_module_here" in caplog.text
    # A name the site did not record falls back to the entry points.
    assert catalog.get("opcua") is load_plugins()["opcua"]
    assert catalog.get("nonexistent") is None
    # A reload learns where a (new or moved) driver lives.
    catalog.learn({"gone": "drivers.serial.plugin:PLUGIN"})
    assert catalog["gone"] is load_plugins()["serial"]
