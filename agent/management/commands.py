"""The command table: one handler per command of SPEC.md.

A handler gets the :class:`~agent.management.service.Call` (request, args,
``answer`` for replying early) and returns the ``result``; raising
CommandError (or anything else) becomes an error reply in the dispatcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agent.management.config_push import apply_config
from agent.management.protocol import CommandError
from agent.runtime.control import NoSuchDevice
from agent.sdk.driver import DeviceConfig, DriverError
from agent.sdk.readings import now_ms

if TYPE_CHECKING:
    from agent.management.service import Call, Management

__all__ = ["COMMANDS", "Handler"]

Handler = Callable[["Management", "Call"], Awaitable[Any]]

# An on-demand read or write waits at most this long for the device (the
# driver may queue behind a poll on a shared bus); an arg can lower it.
DEVICE_TIMEOUT = 15.0


def _only(call: Call, *allowed: str) -> None:
    unknown = sorted(set(call.args) - set(allowed))
    if unknown:
        known = ", ".join(allowed) or "none"
        raise CommandError(f"unknown argument(s) {', '.join(unknown)} for {call.command}; "
                           f"accepted: {known}")


def _str_arg(call: Call, name: str) -> str:
    value = call.args.get(name)
    if not isinstance(value, str) or not value:
        raise CommandError(f"{call.command} needs \"{name}\" (a string)")
    return value


def _timeout(call: Call) -> float:
    value = call.args.get("timeout", DEVICE_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 120:
        raise CommandError("\"timeout\" must be a number of seconds in (0, 120]")
    return float(value)


def _device(m: Management, call: Call) -> DeviceConfig:
    try:
        return m.control.device(_str_arg(call, "device"))
    except NoSuchDevice as err:
        raise CommandError(str(err)) from None


async def ping(m: Management, call: Call) -> Any:
    _only(call)
    return {"pong": True, "ts": now_ms()}


async def status(m: Management, call: Call) -> Any:
    _only(call)
    return m.control.status(m.status_cpu)


async def config_get(m: Management, call: Call) -> Any:
    _only(call)
    site = m.control.site
    return {"yaml": site.text, "hash": site.hash}


async def config_apply(m: Management, call: Call) -> Any:
    _only(call, "yaml")
    return await apply_config(m.control, call)


async def read(m: Management, call: Call) -> Any:
    _only(call, "device", "tags", "timeout")
    device = _device(m, call)
    tags = call.args.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags) or not tags:
            raise CommandError("\"tags\" must be a non-empty list of tag names (or left out)")
        known = set(device.tag_names())
        unknown = [t for t in tags if t not in known]
        if unknown:
            raise CommandError(f"device {device.name} has no tag(s) {', '.join(unknown)}")
    try:
        async with asyncio.timeout(_timeout(call)):
            sample = await m.control.read(device.name, tags)
    except TimeoutError:
        raise CommandError(f"device {device.name}: no answer in time") from None
    except DriverError as err:
        raise CommandError(f"device {device.name}: {err}") from None
    return {"samples": [sample.to_json_obj()]}


async def write(m: Management, call: Call) -> Any:
    _only(call, "device", "tag", "value", "timeout")
    device = _device(m, call)
    tag = _str_arg(call, "tag")
    if "value" not in call.args:
        raise CommandError("write needs \"value\"")
    value = call.args["value"]
    try:
        async with asyncio.timeout(_timeout(call)):
            read_back = await m.control.write(device.name, tag, value,
                                              origin=f"remote:{call.id}")
    except TimeoutError:
        raise CommandError(f"device {device.name}: no answer in time") from None
    except DriverError as err:
        # WriteRefused is a DriverError: its text says which guard refused.
        raise CommandError(f"write {device.name}.{tag}: {err}") from None
    return {"device": device.name, "tag": tag, "value": read_back}


async def restart(m: Management, call: Call) -> Any:
    _only(call)
    # Reply first: once stopping, the uplink goes down.  systemd's
    # Restart=always starts the agent again.
    await call.answer({"restarting": True})
    m.control.restart()
    return None


async def log_level(m: Management, call: Call) -> Any:
    _only(call, "level", "logger")
    level = _str_arg(call, "level")
    logger = call.args.get("logger")
    if logger is not None and (not isinstance(logger, str) or not logger):
        raise CommandError("\"logger\" must be a logger name such as \"pymodbus\"")
    try:
        m.control.set_log_level(level, logger)
    except ValueError as err:
        raise CommandError(str(err)) from None
    return {"level": level.lower(), "logger": logger}


async def buffer_stats(m: Management, call: Call) -> Any:
    _only(call)
    return m.control.buffer_stats()


COMMANDS: dict[str, Handler] = {
    "ping": ping,                    # liveness and round-trip time; touches nothing
    "status": status,                # state + health + latest sample per device
    "config.get": config_get,        # the running YAML, ${...} references unresolved
    "config.apply": config_apply,    # validate, write, apply live, roll back on uplink loss
    "read": read,                    # on-demand read through the running driver
    "write": write,                  # the one guarded write path, audited as remote:<id>
    "restart": restart,              # clean stop; systemd brings the agent back
    "log_level": log_level,          # run-time level, optionally for one library's logger
    "buffer.stats": buffer_stats,    # depth, bytes, oldest age, drops
}
