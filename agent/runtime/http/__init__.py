"""The local HTTP endpoint: ``/metrics``, ``/`` (status page), ``/api/status``.

This package's ``__init__`` is all the agent imports: the supervisor below
idles on an event while the site has no ``http:`` block, so a site without
it never imports the server, the page or ``prometheus_client``.  A reload
that adds, changes or removes ``http:`` (re)starts or stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config.model import HttpConfig
    from agent.config.site import Site
    from agent.runtime.agent import Agent

__all__ = ["http_service"]

log = logging.getLogger("agent.http")

# A port taken by another program: try again now and then, never give up
# (and never take the agent down: this is a convenience, not the pipeline).
RETRY_FIRST = 2.0
RETRY_CAP = 60.0


async def _wait_change(changed: asyncio.Event, at_most: float | None = None) -> None:
    # No await between a caller's check of the config and this clear(), so a
    # reload cannot slip between them.
    changed.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(changed.wait(), at_most)


async def http_service(agent: Agent) -> None:
    """Run the endpoint for as long as the agent runs, following reloads."""
    changed = asyncio.Event()

    async def on_reload(site: Site) -> None:
        changed.set()

    agent.on_reload.append(on_reload)
    shared = None  # counters and the problem ring outlive a server restart
    retry = RETRY_FIRST
    try:
        while True:
            cfg: HttpConfig | None = agent.site.config.http
            if cfg is None:
                await _wait_change(changed)
                continue
            from agent.runtime.http.server import HttpServer, Shared

            if shared is None:
                shared = Shared()
                shared.problems.install()
            try:
                server = HttpServer(agent, cfg, shared)
                await server.start()
            except Exception as err:  # task boundary: a log line and a retry, never a dead agent
                if isinstance(err, OSError):
                    log.error("http: cannot listen on %s: %s; retrying in %.0f s",
                              cfg.listen, err.strerror or err, retry)
                else:
                    log.exception("http: cannot start the endpoint; retrying in %.0f s", retry)
                await _wait_change(changed, retry)
                retry = min(retry * 2, RETRY_CAP)
                continue
            retry = RETRY_FIRST
            try:
                while agent.site.config.http == cfg:
                    await _wait_change(changed)
            finally:
                await server.close()
            log.info("http: settings changed, restarting the endpoint")
    finally:
        if on_reload in agent.on_reload:
            agent.on_reload.remove(on_reload)
        if shared is not None:
            shared.problems.remove()
