"""``config.apply``: validate, write atomically, apply live, roll back if the uplink is lost.

The config that is known to work (it kept or brought the uplink up) is the
*good* one, saved as ``last-good.yaml`` in the state directory.  A push
whose broker, credentials or topics differ is on probation: if the uplink
is not connected again within ``rollback_after`` (the smaller of the old and
the new value, so a push cannot disable its own safety net) the good config
is written back and applied, and ``state`` says why.  A push that leaves
the uplink settings alone cannot lose the link and is good at once.

Probation survives a restart (a marker file in the state directory): an
agent restarted during probation does not promote the pushed file to
last-good, and the watch starts again from the new start.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.load import ConfigErrors, Site, parse_site
from agent.config.store import (
    LAST_GOOD,
    atomic_write,
    clear_probation,
    read_probation,
    save_last_good,
    write_probation,
)
from agent.management.protocol import CommandError
from agent.runtime.logs import register_secret

if TYPE_CHECKING:
    from agent.management.service import Call
    from agent.runtime.agent import Agent

__all__ = ["ConfigPusher"]

log = logging.getLogger("agent.management.config")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _uplink_key(site: Site) -> tuple[Any, ...]:
    return (site.config.uplink, site.config.gateway)


def register_site_secrets(site: Site) -> None:
    """Resolved secrets of a pushed config must never reach a log line."""
    mqtt = site.config.uplink.mqtt
    if mqtt.password is not None:
        register_secret(mqtt.password.get_secret_value())
    key = site.config.management.command_key
    if key is not None:
        register_secret(key.get_secret_value())


class ConfigPusher:
    def __init__(self, agent: Agent, config_path: Path | None) -> None:
        self.agent = agent
        self.config_path = config_path
        self.state_dir = agent.state_dir
        #: The config known to keep the uplink up: what a rollback restores.
        self.good: Site = agent.site
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        #: The pushed config on probation (its uplink not proven yet).
        self._probation: Site | None = None
        self._reconnected = asyncio.Event()
        self._ours = False  # set while we call apply_site, to tell SIGHUP reloads apart
        agent.uplink.on_connect.append(self._on_connect)
        agent.on_reload.append(self._on_reload)

    @property
    def pending(self) -> bool:
        """A pushed config is applied but has not proved its uplink yet."""
        return self._probation is not None

    async def _on_connect(self) -> None:
        self._reconnected.set()

    async def _on_reload(self, site: Site) -> None:
        if self._ours:
            return
        # A SIGHUP reload of the site file (run.py saved it as last-good).
        await self._end_probation()
        self.good = site
        self.agent.state_extra.pop("config_error", None)
        self.agent.state_extra.pop("rollback", None)

    # -- the service: ties the rollback watch to the agent's lifetime ------
    async def run(self, agent: Agent) -> None:
        try:
            await self._resume()
            await asyncio.Event().wait()
        finally:
            # Stopping is not a verdict: the marker stays for the next start.
            if self._watch is not None:
                self._watch.cancel()

    async def _resume(self) -> None:
        marker = await asyncio.to_thread(read_probation, self.state_dir)
        if marker is None:
            return
        site = self.agent.site
        try:
            if marker["hash"] != site.hash:
                raise ValueError("the running config is not the one on probation")
            text = (self.state_dir / LAST_GOOD).read_text(encoding="utf-8")
            good = await asyncio.to_thread(parse_site, text, str(self.state_dir / LAST_GOOD))
        except (ValueError, OSError, ConfigErrors) as err:
            log.info("probation of config %s not resumed: %s", marker["hash"], err)
            await asyncio.to_thread(clear_probation, self.state_dir)
            return
        if good.hash == site.hash:
            await asyncio.to_thread(clear_probation, self.state_dir)
            return
        after = float(marker.get("rollback_after") or site.config.management.rollback_after)
        log.warning("config %s was pushed and not proven before the restart: back to %s "
                    "unless the uplink is up within %g s", site.hash, good.hash, after)
        self.good = good
        self._probation = site
        self._watch = asyncio.create_task(self._watch_uplink(site, after),
                                          name="config-rollback-watch")

    async def _end_probation(self) -> None:
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()
        self._watch = None
        if self._probation is not None:
            self._probation = None
            await asyncio.to_thread(clear_probation, self.state_dir)

    async def _apply(self, site: Site) -> dict[str, list[str]]:
        self._ours = True
        try:
            return await self.agent.apply_site(site)
        finally:
            self._ours = False

    async def _reject(self, err: ConfigErrors) -> CommandError:
        lines = [p.format(None) for p in err.problems]
        self.agent.state_extra["config_error"] = (
            f"pushed config rejected at {_now_iso()}, still running {self.agent.site.hash}:\n"
            + "\n".join(lines))
        await self.agent.uplink.publish_state()
        log.warning("pushed config rejected (%d problem(s)); nothing changed:\n%s",
                    len(lines), "\n".join(lines))
        return CommandError("\n".join(lines), problems=lines)

    async def _write_site(self, text: str) -> None:
        if self.config_path is not None:
            # Blocking fsyncs stay off the event loop: polling goes on meanwhile.
            await asyncio.to_thread(atomic_write, self.config_path, text)

    # -- the command -------------------------------------------------------
    async def apply(self, call: Call) -> Any:
        text = call.args.get("yaml")
        if not isinstance(text, str):
            raise CommandError("config.apply needs {\"yaml\": \"<the whole site file>\"}")
        try:
            # In a thread: validating a big site takes long enough (100s of ms
            # for 2,000 tags) to make every device on this loop miss a poll.
            site = await asyncio.to_thread(
                parse_site, text, str(self.config_path) if self.config_path else None)
        except ConfigErrors as err:
            raise await self._reject(err) from None
        register_site_secrets(site)
        async with self._lock:
            if site.hash == self.agent.site.hash and not self.pending:
                return {"applied": False, "unchanged": True, "hash": site.hash}
            await self._end_probation()
            await asyncio.to_thread(save_last_good, self.state_dir, self.good.text)
            try:
                await self._write_site(site.text)
            except OSError as err:
                raise CommandError(f"cannot write {self.config_path}: {err.strerror}; "
                                   "nothing changed") from None
            self.agent.state_extra.pop("config_error", None)
            self.agent.state_extra.pop("rollback", None)
            if _uplink_key(site) == _uplink_key(self.good):
                changes = await self._apply(site)
                self.good = site
                await asyncio.to_thread(save_last_good, self.state_dir, site.text)
                return {"applied": True, "hash": site.hash, "changes": changes}
            after = min(site.config.management.rollback_after,
                        self.good.config.management.rollback_after)
            await asyncio.to_thread(write_probation, self.state_dir, site.hash, after)
            self._probation = site
            # The uplink will reconnect: answer while the old session still exists.
            await call.answer({"applied": True, "hash": site.hash, "uplink": "reconnecting",
                               "rollback_after_s": after, "previous_hash": self.good.hash})
            self._reconnected.clear()
            await self._apply(site)
            self._watch = asyncio.create_task(self._watch_uplink(site, after),
                                              name="config-rollback-watch")
            return None

    async def _watch_uplink(self, site: Site, after: float) -> None:
        try:
            await asyncio.wait_for(self._reconnected.wait(), after)
        except TimeoutError:
            await self._rollback(site, after)
            return
        await asyncio.to_thread(save_last_good, self.state_dir, site.text)
        self.good = site
        self._probation = None
        await asyncio.to_thread(clear_probation, self.state_dir)
        log.info("config %s confirmed: the uplink is up with it", site.hash)

    async def _rollback(self, bad: Site, after: float) -> None:
        async with self._lock:
            good = self.good
            why = self.agent.uplink.counters.last_error or "no connection"
            reason = (f"config {bad.hash} lost the uplink for {after:g} s ({why}); "
                      f"rolled back to {good.hash}")
            log.error("%s", reason)
            self.agent.state_extra["rollback"] = {
                "reason": reason, "from": bad.hash, "to": good.hash, "at": _now_iso()}
            try:
                await self._write_site(good.text)
            except OSError as err:
                log.error("cannot restore %s: %s (running %s anyway)",
                          self.config_path, err.strerror, good.hash)
            await self._apply(good)
            self._probation = None
            await asyncio.to_thread(clear_probation, self.state_dir)
