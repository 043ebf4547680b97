"""``config.apply``: validate, write atomically, apply live, roll back if the uplink is lost.

The config that is known to work (it kept or brought the uplink up) is the
*good* one, saved as ``last-good.yaml`` in the state directory.  A push
whose broker, credentials or topics differ must prove itself: if the uplink
is not connected again within ``rollback_after`` (the smaller of the old and
the new value, so a push cannot disable its own safety net) the good config
is written back and applied, and ``state`` says why.  A push that leaves
the uplink settings alone cannot lose the link and is good at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.load import ConfigErrors, Site, parse_site
from agent.logs import register_secret
from agent.management.files import atomic_write
from agent.management.protocol import CommandError
from agent.run import save_last_good

if TYPE_CHECKING:
    from agent.app import Agent
    from agent.management.service import Call

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
        self._cancel_watch()
        self.good = site
        self.agent.state_extra.pop("config_error", None)
        self.agent.state_extra.pop("rollback", None)

    def _cancel_watch(self) -> None:
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()
        self._watch = None
        self._probation = None

    async def _apply(self, site: Site) -> dict[str, list[str]]:
        self._ours = True
        try:
            return await self.agent.apply_site(site)
        finally:
            self._ours = False

    async def _reject(self, text: str, err: ConfigErrors) -> CommandError:
        lines = [p.format(None) for p in err.problems]
        self.agent.state_extra["config_error"] = (
            f"pushed config rejected at {_now_iso()}, still running {self.agent.site.hash}:\n"
            + "\n".join(lines))
        await self.agent.uplink.publish_state()
        log.warning("pushed config rejected (%d problem(s)); nothing changed:\n%s",
                    len(lines), "\n".join(lines))
        return CommandError("\n".join(lines), problems=lines)

    async def _persist(self, site: Site) -> None:
        # Blocking fsyncs stay off the event loop: polling goes on meanwhile.
        await asyncio.to_thread(save_last_good, self.agent.state_dir, self.good.text)
        if self.config_path is not None:
            try:
                await asyncio.to_thread(atomic_write, self.config_path, site.text)
            except OSError as err:
                raise CommandError(f"cannot write {self.config_path}: {err.strerror}; "
                                   "nothing changed") from None

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
            raise await self._reject(text, err) from None
        register_site_secrets(site)
        async with self._lock:
            old = self.agent.site
            if site.hash == old.hash and not self.pending:
                return {"applied": False, "unchanged": True, "hash": site.hash}
            self._cancel_watch()
            await self._persist(site)
            self.agent.state_extra.pop("config_error", None)
            self.agent.state_extra.pop("rollback", None)
            if _uplink_key(site) == _uplink_key(self.good):
                changes = await self._apply(site)
                self.good = site
                await asyncio.to_thread(save_last_good, self.agent.state_dir, site.text)
                return {"applied": True, "hash": site.hash, "changes": changes}
            # The uplink will reconnect: answer while the old session still exists.
            after = min(site.config.management.rollback_after,
                        self.good.config.management.rollback_after)
            self._probation = site
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
        await asyncio.to_thread(save_last_good, self.agent.state_dir, site.text)
        self.good = site
        self._probation = None
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
            if self.config_path is not None:
                try:
                    await asyncio.to_thread(atomic_write, self.config_path, good.text)
                except OSError as err:
                    log.error("cannot restore %s: %s (running %s anyway)",
                              self.config_path, err.strerror, good.hash)
            await self._apply(good)
            self._probation = None
