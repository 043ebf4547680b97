"""``edge-agent read`` and ``write``: one-shot access for commissioning."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from agent.config.load import ConfigErrors, Site, load_site, models_in
from agent.config.plugins import load_plugins
from agent.config.store import default_state_dir
from agent.pipeline.writes import guarded_write
from agent.runtime.logs import setup_logging
from agent.sdk.counters import DeviceCounters
from agent.sdk.driver import DeviceConfig, Driver, DriverContext, DriverError, DriverPlugin, TagConfig

__all__ = ["parse_value", "run_read", "run_write"]

T = TypeVar("T")


def adhoc_name(address: str) -> str:
    """A tag name for an ad-hoc address (``nsu=urn:x;s=A.B`` -> ``nsu_urn_x_s_A.B``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", address)
    return name if re.match(r"^[A-Za-z0-9]", name) else "a" + name


def parse_value(text: str) -> Any:
    """'12.5' -> 12.5, 'true' -> True, '7' -> 7, anything else stays text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool) else text


def _fail(message: str) -> int:
    print(f"edge-agent: {message}", file=sys.stderr)
    return 1


def _site_and_device(args: argparse.Namespace) -> tuple[Site, DeviceConfig, DriverPlugin]:
    site = load_site(args.config)
    device = site.device(args.device)
    if device is None:
        names = ", ".join(d.name for d in site.devices) or "none"
        raise LookupError(f"no device {args.device!r} in {args.config} (devices: {names})")
    plugin = load_plugins()[device.driver]
    assert isinstance(plugin, DriverPlugin)  # validation refused broken drivers
    return site, device, plugin


def _per_address(values: list[str], addresses: list[str], flag: str) -> list[str | None]:
    """One value for all addresses, or one per address in the same order."""
    if not values:
        return [None] * len(addresses)
    if len(values) == 1:
        return [values[0]] * len(addresses)
    if len(values) == len(addresses):
        return [*values]
    raise LookupError(f"give {flag} once for all addresses or once per --address "
                      f"({len(addresses)}), not {len(values)} times")


def _with_adhoc_tags(device: DeviceConfig, plugin: DriverPlugin,
                     args: argparse.Namespace) -> DeviceConfig:
    """The device plus tags for ``--address`` values, validated by the driver's tag model."""
    if not args.address:
        return device
    tag_models = models_in(plugin.config_model.model_fields["tags"].annotation)
    tag_model = next((m for m in tag_models if issubclass(m, TagConfig)), None)
    if tag_model is None:
        raise LookupError(f"driver {plugin.name} does not support ad-hoc addresses")
    extra: list[TagConfig] = []
    types = _per_address(args.type_, args.address, "--type")
    orders = _per_address(args.order, args.address, "--order")
    for address, type_, order in zip(args.address, types, orders, strict=True):
        raw: dict[str, Any] = {"name": adhoc_name(address), plugin.address_field: address}
        if type_:
            raw["type"] = type_
        if order:
            raw["order"] = order
        extra.append(tag_model.model_validate(raw))
    return device.model_copy(update={"tags": [*device.tags, *extra]})


async def _with_driver(device: DeviceConfig, plugin: DriverPlugin, state_dir: Path,
                       action: Callable[[Driver], Awaitable[T]]) -> T:
    import logging

    context = DriverContext(state_dir=state_dir, counters=DeviceCounters(),
                            log=logging.getLogger(f"agent.device.{device.name}"))
    driver = plugin.factory(device, context)
    try:
        await driver.connect()
        return await action(driver)
    finally:
        await driver.close()


def _state_dir(args: argparse.Namespace) -> Path:
    """The agent's own state dir when usable: an OPC UA server then sees the
    same client certificate (and trust-on-first-use records) as the service."""
    if args.state_dir:
        return Path(args.state_dir)
    default = default_state_dir()
    if default.is_dir() and os.access(default, os.W_OK):
        return default
    tmp = Path(tempfile.mkdtemp(prefix="edge-"))
    print(f"edge-agent: {default} is not writable; using {tmp} for driver state "
          "(a secured OPC UA server may need to trust a new client certificate)",
          file=sys.stderr)
    return tmp


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def run_read(args: argparse.Namespace) -> int:
    setup_logging("warning")
    try:
        _, device, plugin = _site_and_device(args)
        device = _with_adhoc_tags(device, plugin, args)
    except ConfigErrors as err:
        return _fail(err.render())
    except (LookupError, ValidationError) as err:
        return _fail(str(err))
    names = list(args.tags) + [adhoc_name(a) for a in args.address] or None
    unknown = [t for t in names or [] if device.find_tag(t) is None]
    if unknown:
        return _fail(f"device {device.name} has no tag(s) {', '.join(unknown)}")
    started = time.perf_counter()
    try:
        sample = asyncio.run(_with_driver(device, plugin, _state_dir(args),
                                          lambda d: d.read(names)))
    except (DriverError, OSError, TimeoutError) as err:
        return _fail(f"{device.name}: {err or type(err).__name__}")
    latency = (time.perf_counter() - started) * 1000
    rows = [["TAG", "VALUE", "UNIT", "QUALITY"]]
    for tag, value in sample.values.items():
        cfg = device.find_tag(tag)
        quality = ("bad: " + sample.bad[tag]) if tag in sample.bad else (
            "uncertain: " + sample.uncertain[tag] if tag in sample.uncertain else "good")
        rows.append([tag, json.dumps(value), (cfg.unit if cfg else None) or "", quality])
    print(format_table(rows))
    print(f"{device.name}: {len(sample.values)} tag(s) in {latency:.0f} ms "
          f"(connect + read), ts {sample.ts}")
    return 1 if sample.bad and len(sample.bad) == len(sample.values) else 0


def run_write(args: argparse.Namespace) -> int:
    setup_logging("info")
    try:
        _, device, plugin = _site_and_device(args)
    except ConfigErrors as err:
        return _fail(err.render())
    except LookupError as err:
        return _fail(str(err))
    value = parse_value(args.value)
    try:
        back = asyncio.run(_with_driver(
            device, plugin, _state_dir(args),
            lambda d: guarded_write(d, args.tag, value, origin="cli")))
    except (DriverError, OSError, TimeoutError) as err:
        return _fail(f"write {device.name}.{args.tag} refused or failed: {err}")
    print(f"{device.name}.{args.tag} = {json.dumps(back)} (read back)")
    return 0
