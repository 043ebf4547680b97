"""The config lifecycle: one policy for every way a config arrives (start, SIGHUP, ``config.apply``).

1. A new config is validated off the event loop (a 10,000-tag file takes
   seconds to validate; polls go on meanwhile) and applied atomically: the
   running config changes only once the scheduler accepted it.  A refused
   config changes nothing and ``state`` says why (``config_error``).
2. A running config that is not last-good is **on probation** for
   ``rollback_after`` (the smaller of its own and last-good's value: a config
   cannot switch off its own safety net).  The marker and the pending file
   survive a restart.
3. At the end of the window: the uplink came up with it -> it becomes
   last-good.  It did not, and its uplink settings differ from last-good's
   (so they can be blamed) -> **rollback**: last-good is written back to the
   site file and applied, the replaced file kept as ``rolled-back.yaml``,
   and ``state`` carries ``rollback``.  It did not, but the uplink settings
   are last-good's (a broker outage, not the config) -> it is promoted as
   soon as the uplink is up.

Management's ``config.apply`` and the SIGHUP handler only call :meth:`apply`
and :meth:`reload_file`; nothing else writes the config files.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from agent.config.offload import reuse_running
from agent.config.site import ConfigErrors, Site
from agent.config.store import ConfigStore
from agent.runtime.logs import register_secrets_from
from agent.runtime.state_report import now_iso

if TYPE_CHECKING:
    from agent.runtime.agent import Agent

__all__ = ["ApplyFailed", "ConfigLifecycle", "load_registered", "uplink_key"]

log = logging.getLogger("agent.reload")

#: Called with the reply-to-be just before a change of uplink settings takes
#: effect (the current session is about to end: answer while it exists).
BeforeSwitch = Callable[[dict[str, Any]], Awaitable[None]]


class ApplyFailed(Exception):
    """The agent refused a valid config (e.g. a driver could not build a device); nothing changed."""


def uplink_key(site: Site) -> tuple[Any, ...]:
    """What, if changed, makes the uplink reconnect (and can lose it)."""
    return (site.config.uplink, site.config.gateway)


_gc_lock = threading.Lock()
_gc_pausers = 0


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while a big config is parsed in a thread.

    Parsing a 10,000-tag file allocates millions of objects, which triggers
    full collections; each walks every object of the process while holding
    the GIL, and the event loop stalls for 100s of ms (polls missed).  The
    parse makes no cycles worth collecting; collections resume afterwards.
    """
    global _gc_pausers
    with _gc_lock:
        _gc_pausers += 1
        was_enabled = gc.isenabled() if _gc_pausers == 1 else True
        gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and was_enabled:
                gc.enable()


def load_registered(load: Callable[[], Site]) -> Site:
    """``load()`` and register the config's secrets with the log filter (blocking: use a thread).

    Validating a 10,000-tag file takes 2-4 s here, walking it for secrets
    another 0.1 s: on the loop, every device would miss polls meanwhile.
    """
    with _gc_paused():
        site = load()
        register_secrets_from(site)
    return site


class ConfigLifecycle:
    def __init__(self, agent: Agent, store: ConfigStore) -> None:
        self.agent = agent
        self.store = store
        #: The last good config (None before any config proved itself).
        self.good: Site | None = None
        #: The running config while it is on probation.
        self.probation: Site | None = None
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        # The uplink came up with the config on probation.
        self._link_seen = False
        self._link_up = asyncio.Event()
        # Set once last-good and the marker are read: applies wait for it.
        self._started = asyncio.Event()
        agent.uplink.on_connect.append(self._on_connect)

    @property
    def pending(self) -> bool:
        """A config is running that has not proven itself yet."""
        return self.probation is not None

    async def _on_connect(self) -> None:
        self._link_seen = True
        self._link_up.set()

    # -- the service: start, then keep the watch until the agent stops ----
    async def run(self) -> None:
        try:
            try:
                await self._start()
            except Exception:
                # A state directory that refuses writes must not stop the agent:
                # it runs on, without the safety net, and says so.
                log.exception("config probation could not start; running %s without it",
                              self.agent.site.hash)
            finally:
                self._started.set()
            await asyncio.Event().wait()
        finally:
            # Stopping is not a verdict: the marker stays for the next start.
            if self._watch is not None:
                self._watch.cancel()

    async def _start(self) -> None:
        site = self.agent.site
        self.good = await asyncio.to_thread(self.store.last_good)
        if self.good is not None and self.good.hash == site.hash:
            await asyncio.to_thread(self.store.end_probation)
            return
        marker = await asyncio.to_thread(self.store.probation)
        after = self._window(site)
        if marker is not None and marker["hash"] == site.hash:
            # Restarted during its probation: the window starts again, never longer.
            with contextlib.suppress(TypeError, ValueError):
                after = min(after, float(marker.get("rollback_after") or after))
        # The connection made at start-up was made with this config.
        self._link_seen = self.agent.uplink.counters.connected
        await self._begin(site, after)

    def _window(self, site: Site) -> float:
        after = site.config.management.rollback_after
        if self.good is not None:
            after = min(after, self.good.config.management.rollback_after)
        return after

    async def _begin(self, site: Site, after: float, *, written: bool = False) -> None:
        if not written:
            await asyncio.to_thread(self.store.begin_probation, site, after)
        self.probation = site
        if self.good is None:
            log.info("config %s runs on probation: last-good once the uplink is up "
                     "(first good config)", site.hash)
        else:
            log.info("config %s runs on probation for %g s (last good: %s)",
                     site.hash, after, self.good.hash)
        self._watch = asyncio.create_task(self._watch_probation(site, after),
                                          name="config-probation")

    async def _stop_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None and not watch.done() and watch is not asyncio.current_task():
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        self.probation = None

    async def _watch_probation(self, site: Site, after: float) -> None:
        try:
            await self._judge(site, after)
        except Exception:
            log.exception("probation of config %s failed; it stays on probation", site.hash)

    async def _judge(self, site: Site, after: float) -> None:
        await asyncio.sleep(after)
        if not self._link_seen:
            if self.good is not None and uplink_key(site) != uplink_key(self.good):
                await self._rollback(site, after)
                return
            log.info("config %s: the uplink is down (its settings are last-good's, not to "
                     "blame); promoted once it is up", site.hash)
            self._link_up.clear()
            while not self.agent.uplink.counters.connected:
                await self._link_up.wait()
                self._link_up.clear()
        async with self._lock:
            if self.probation is not site:
                return
            await asyncio.to_thread(self.store.promote, site)
            self.good = site
            self.probation = None
            self._watch = None
        log.info("config %s is last-good: it ran %g s with the uplink up", site.hash, after)

    async def _rollback(self, bad: Site, after: float) -> None:
        async with self._lock:
            good = self.good
            if self.probation is not bad or good is None:
                return
            why = self.agent.uplink.counters.last_error or "no connection"
            reason = (f"config {bad.hash} lost the uplink for {after:g} s ({why}); "
                      f"rolled back to {good.hash}")
            log.error("%s", reason)
            try:
                kept = await asyncio.to_thread(self.store.keep_rolled_back, bad)
                log.warning("the replaced config is kept as %s", kept)
                await asyncio.to_thread(self.store.write_site, good.text)
            except OSError as err:
                log.error("cannot restore %s: %s (running %s anyway)",
                          self.store.site_path, err.strerror, good.hash)
            try:
                await self.agent.apply_site(good)
            except Exception:
                log.exception("rollback to %s failed; still running %s", good.hash, bad.hash)
                return
            self.probation = None
            self._watch = None
            await asyncio.to_thread(self.store.end_probation)
            self.agent.report.set_rollback(reason, bad=bad.hash, good=good.hash)
            await self.agent.uplink.publish_state()

    # -- a new config: config.apply and SIGHUP ----------------------------
    async def apply(self, site: Site, *, write_file: bool,
                    before_switch: BeforeSwitch | None = None) -> dict[str, Any]:
        """Run the validated ``site``; on probation unless it is last-good.

        Raises OSError (site file not writable) or :class:`ApplyFailed`, both
        with nothing changed.  Its secrets must be registered already (see
        :func:`load_registered`): walking a big config belongs off the loop.
        """
        await self._started.wait()
        async with self._lock:
            running = self.agent.site
            if site.hash == running.hash and not self.pending:
                return {"applied": False, "unchanged": True, "hash": site.hash}
            site = reuse_running(site, running)  # unchanged devices: one copy, not two
            if write_file:
                # First: a site file we cannot write leaves everything as it was.
                await asyncio.to_thread(self.store.write_site, site.text)
            await self._stop_watch()
            on_probation = self.good is None or site.hash != self.good.hash
            after = self._window(site)
            reply: dict[str, Any] = {"applied": True, "hash": site.hash}
            if on_probation:
                reply["rollback_after_s"] = after
            if self.good is not None:
                reply["previous_hash"] = self.good.hash
            switching = uplink_key(site) != uplink_key(running)
            if on_probation:
                # Before the reply: a restart from here on must find the marker.
                await asyncio.to_thread(self.store.begin_probation, site, after)
            if switching and before_switch is not None:
                await before_switch({**reply, "uplink": "reconnecting"})
            # The link seen so far counts only if the new config keeps it.
            self._link_seen = not switching and self.agent.uplink.counters.connected
            try:
                changes = await self.agent.apply_site(site)
            except Exception as err:
                if write_file:
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread(self.store.write_site, running.text)
                text = f"{type(err).__name__}: {err}"
                self.agent.report.set_config_error(
                    f"config {site.hash} refused at {now_iso()}, still running {running.hash}: "
                    f"{text}")
                log.error("config %s refused, still running %s", site.hash, running.hash,
                          exc_info=err)
                if running.hash != getattr(self.good, "hash", None):
                    # The still-running config goes on with its probation.
                    await self._begin(running, self._window(running))
                else:
                    await asyncio.to_thread(self.store.end_probation)
                await self.agent.uplink.publish_state()
                raise ApplyFailed(text) from err
            if on_probation:
                await self._begin(site, after, written=True)
            else:
                await asyncio.to_thread(self.store.end_probation)
            reply["changes"] = changes
            return reply

    async def refuse(self, err: ConfigErrors, what: str) -> list[str]:
        """A config that failed validation: nothing changes, ``state`` says why."""
        lines = [p.format(None) for p in err.problems]
        self.agent.report.set_config_error(
            f"{what} rejected at {now_iso()}, still running {self.agent.site.hash}:\n"
            + "\n".join(lines))
        await self.agent.uplink.publish_state()
        return lines

    async def reload_file(self) -> None:
        """SIGHUP: the site file again, validated off the loop; systemd always gets READY=1."""
        notifier = self.agent.notifier
        notifier.reloading()
        try:
            try:
                site = await asyncio.to_thread(load_registered, self.store.load_site)
            except ConfigErrors as err:
                await self.refuse(err, "reloaded site file")
                log.error("reload refused, keeping config %s:\n%s", self.agent.site.hash,
                          err.render())
                return
            result = await self.apply(site, write_file=False)
            if not result["applied"]:
                log.info("reload: config %s unchanged", site.hash)
        except ApplyFailed:
            pass  # logged, and in state
        except Exception:
            log.exception("reload refused, keeping config %s", self.agent.site.hash)
        finally:
            notifier.ready()
            notifier.status(self.agent.summary())
