"""Parse, then validate: a site file becomes a :class:`Site` or every problem.

Validation is pure: it never opens a device, a socket or a serial port.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.config.compact import compact_site
from agent.config.limits import MAX_PROBLEMS, MAX_SITE_BYTES, human_size
from agent.config.model import SiteConfig
from agent.config.plugins import PluginLoadError, load_plugins, plugin_refs
from agent.config.profiles import check_profile
from agent.config.secrets import resolve_references
from agent.config.site import ConfigErrors, Loc, Problem, Site
from agent.config.sparkplug import check_births
from agent.config.yaml_source import PosDict, YamlProblem, line_of, load_yaml
from agent.sdk.driver import NAME_PATTERN, DeviceConfig, DriverPlugin

__all__ = ["ConfigErrors", "Problem", "Site", "load_site", "parse_site"]


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, list, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return models_in(args[0])
    if origin in (typing.Union, types.UnionType) or args:
        return [m for arg in args for m in models_in(arg)]
    return []


def _known_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    current = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in current:
            field = m.model_fields.get(part)
            if field is not None:
                nxt.extend(models_in(field.annotation))
        current = nxt
    return sorted({k for m in current for k in m.model_fields})


def _message(err: Any, model: type[BaseModel], loc: Loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _known_keys(model, loc[:-1])
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return "use only letters, digits, '_', '.' and '-' (it is part of MQTT topics)"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _data_loc(data: Any, loc: Loc) -> Loc:
    """``loc`` without the names pydantic inserts for union members.

    A tagged union puts the chosen member's tag (``connection.tcp.host``) or
    a validator label (``function-after[...]``) into the error path; neither
    is a key the user wrote.  A part that is not a key of the data at that
    point, with more parts after it, is such a name.
    """
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        is_key = isinstance(node, dict) and part in node
        is_index = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (is_key or is_index) and i < len(loc) - 1:
            continue
        out.append(part)
        node = node[part] if (is_key or is_index) else None
    return tuple(out)


class _Problems(list[Problem]):
    """Problems found so far, and how many more were not worth describing."""

    hidden = 0

    def capped(self, text: str) -> list[Problem]:
        shown = sorted(self, key=lambda p: (p.line, p.path))[:MAX_PROBLEMS]
        more = self.hidden + len(self) - len(shown)
        if more:
            # A file with 30,000 unknown keys is one mistake, not 30,000
            # lines to read (and "did you mean" for each cost seconds).
            shown.append(Problem(text.count("\n") + 1, "",
                                 f"and {more} more problem(s); fix these first"))
        return shown


def _validate(
    model: type[BaseModel], data: Any, root: Any, prefix: Loc, problems: list[Problem]
) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            if isinstance(problems, _Problems) and len(problems) >= MAX_PROBLEMS:
                problems.hidden += 1
                continue
            loc = _data_loc(data, tuple(err["loc"]))
            full = (*prefix, *loc)
            problems.append(
                Problem(line_of(root, full), format_loc(full), _message(err, model, loc))
            )
        return None


def _validate_devices(
    raw: Sequence[Any], root: Any, problems: list[Problem]
) -> tuple[list[DeviceConfig], list[str]]:
    plugins = load_plugins()
    devices: list[DeviceConfig] = []
    by_driver: dict[str, list[DeviceConfig]] = {}
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        loc: Loc = ("devices", i)
        if not isinstance(item, dict):
            problems.append(Problem(line_of(root, loc), format_loc(loc), "expected a mapping"))
            continue
        driver_name = item.get("driver")
        plugin = plugins.get(str(driver_name)) if driver_name is not None else None
        if driver_name is None:
            problems.append(Problem(line_of(root, loc), format_loc((*loc, "driver")),
                                    "required key is missing"))
            continue
        if plugin is None:
            close = difflib.get_close_matches(str(driver_name), list(plugins), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(Problem(
                line_of(root, (*loc, "driver")), format_loc((*loc, "driver")),
                f"unknown driver {driver_name!r} (installed: {', '.join(sorted(plugins))}){hint}",
            ))
            continue
        if isinstance(plugin, PluginLoadError):
            problems.append(Problem(line_of(root, (*loc, "driver")),
                                    format_loc((*loc, "driver")), str(plugin)))
            continue
        device = _validate(plugin.config_model, item, root, loc, problems)
        if device is None:
            continue
        if device.name in seen:
            problems.append(Problem(line_of(root, (*loc, "name")), format_loc((*loc, "name")),
                                    f"duplicate device name {device.name!r} "
                                    f"(first at devices[{seen[device.name]}])"))
        seen.setdefault(device.name, i)
        tag_seen: set[str] = set()
        for t, tag in enumerate(device.tags):
            if tag.name in tag_seen:
                tloc = (*loc, "tags", t, "name")
                problems.append(Problem(line_of(root, tloc), format_loc(tloc),
                                        f"duplicate tag name {tag.name!r}"))
            tag_seen.add(tag.name)
        devices.append(device)
        by_driver.setdefault(device.driver, []).append(device)
    warnings: list[str] = []
    for name, group in by_driver.items():
        plugin_ = plugins[name]
        if isinstance(plugin_, DriverPlugin) and plugin_.check is not None:
            warnings.extend(plugin_.check(group))
    return devices, warnings


def _check_sparkplug(config: SiteConfig, devices: Sequence[DeviceConfig], raw: Any, root: Any,
                     problems: list[Problem]) -> None:
    index = {item.get("name"): i for i, item in enumerate(raw) if isinstance(item, dict)}
    for i, message in check_births(devices, config.uplink.mqtt.max_message):
        loc: Loc = ("devices", index.get(devices[i].name, 0), "name")
        problems.append(Problem(line_of(root, loc), format_loc(loc), message))


def parse_site(text: str, source: str | None = None, *, keep: bool = True) -> Site:
    """Validate site YAML text; raise :class:`ConfigErrors` with every problem.

    ``keep=False`` skips making the site cheap to keep (:func:`compact_site`)
    for a caller that only wants the verdict (``check``).
    """
    if len(text) > MAX_SITE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SITE_BYTES:
        raise ConfigErrors([Problem(1, "", f"the site file is larger than "
                                           f"{human_size(MAX_SITE_BYTES)}")], source)
    try:
        return _parse_site(text, source, keep)
    except ConfigErrors:
        raise
    except Exception as err:
        # Every known hostile input is a Problem already (tests/cases/,
        # tests/soak/); this net keeps an unknown one from becoming a
        # traceback or a reply carrying raw exception text.
        raise ConfigErrors([Problem(1, "", f"cannot validate this file ({type(err).__name__} "
                                           "in the validator; please report it)")],
                           source) from err


def _parse_site(text: str, source: str | None, keep: bool) -> Site:
    problems = _Problems()
    try:
        root = load_yaml(text)
    except YamlProblem as err:
        raise ConfigErrors([Problem(err.line, err.path, err.message)], source) from None
    if not isinstance(root, PosDict):
        raise ConfigErrors([Problem(1, "", "the site file must be a mapping")], source)

    def report(loc: Loc, message: str) -> None:
        problems.append(Problem(line_of(root, loc), format_loc(loc), message))

    resolve_references(root, report)
    raw_devices = root.get("devices") or []
    # Devices are validated one by one below, each with its driver's model;
    # the core model only sees their count, so the validated site keeps no
    # reference to the parsed tree (with positions: ~1 KB per tag).
    core = {k: v for k, v in root.items() if k != "devices"}
    core["devices"] = [None] * len(raw_devices) if isinstance(raw_devices, list) else raw_devices
    config = _validate(SiteConfig, core, root, (), problems)
    devices, warnings = (
        _validate_devices(raw_devices, root, problems) if isinstance(raw_devices, list) else ([], [])
    )
    if config is not None:
        check_profile(config, devices, report)
    if config is not None and config.uplink.mqtt.format == "sparkplug_b":
        _check_sparkplug(config, devices, raw_devices, root, problems)
    if problems or config is None:
        raise ConfigErrors(problems.capped(text), source)
    refs = plugin_refs()
    used = sorted({d.driver for d in devices if d.driver in refs})
    site = Site(text=text, source=source, config=config, devices=tuple(devices),
                warnings=tuple(warnings), drivers=tuple((name, refs[name]) for name in used))
    if keep:
        compact_site(site)
    return site


def load_site(path: str | Path, *, keep: bool = True) -> Site:
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SITE_BYTES + 1)  # bounded: `-c /dev/zero` is refused
        text = data.decode("utf-8")
    except OSError as err:
        raise ConfigErrors([Problem(1, "", f"cannot read: {err.strerror}")], str(path)) from None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigErrors([Problem(line, "", "not UTF-8 text")], str(path)) from None
    return parse_site(text, str(path), keep=keep)
