"""``edge-agent run``: start-up checks a technician can act on, then the agent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from agent.config.site import ConfigErrors
from agent.config.store import ConfigStore
from agent.runtime.allocator import limit_malloc_arenas
from agent.runtime.logs import register_secrets_from, setup_logging

__all__ = ["run_agent"]

log = logging.getLogger("agent.run")


def run_agent(config: Path, state_dir: Path, *, log_format: str = "text",
              log_level: str | None = None) -> int:
    limit_malloc_arenas()  # before any thread: arenas are per thread
    setup_logging(log_level or "info", log_format)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe = state_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        print(f"edge-agent: cannot write the state directory {state_dir}: {err.strerror}. "
              "Create it and make it writable by this user, or pass --state-dir.",
              file=sys.stderr)
        return 1
    store = ConfigStore(state_dir, config)
    try:
        site, rejected = store.load_at_start()
    except ConfigErrors as err:
        print(err.render(), file=sys.stderr)
        print(f"edge-agent: {config} has {len(err.problems)} problem(s); not starting. "
              f"Fix them and check with: edge-agent check -c {config}", file=sys.stderr)
        return 1
    # Every resolved ${env:..}/${file:..} value and secret field, drivers' included.
    register_secrets_from(site)
    if log_level is None:
        setup_logging(site.config.log_level, log_format)

    from agent.runtime.agent import Agent

    # Whether and when this config becomes last-good is the lifecycle's call
    # (agent.runtime.reload), the same for start, SIGHUP and config.apply.
    agent = Agent(site, state_dir, store=store)
    if rejected is not None:
        log.error("%s is invalid; running the last good config %s instead:\n%s",
                  config, site.hash, rejected.render())
        agent.report.set_config_error(rejected.render())

    from agent.management import attach_management

    attach_management(agent)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(agent.run(reload_on_sighup=True))
    return 0
