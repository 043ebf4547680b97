"""``edge-agent run``: start-up checks a technician can act on, then the agent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from agent.config.load import ConfigErrors, Site, load_site, parse_site
from agent.config.store import LAST_GOOD, on_probation, save_last_good
from agent.runtime.logs import register_secrets_from, setup_logging

__all__ = ["run_agent"]

log = logging.getLogger("agent.run")

def _load_with_fallback(config: Path, state_dir: Path) -> tuple[Site, str | None]:
    """The site file, else the last good one (with the reason), else raise."""
    try:
        return load_site(config), None
    except ConfigErrors as err:
        last_good = state_dir / LAST_GOOD
        if not last_good.exists():
            raise
        try:
            site = parse_site(last_good.read_text(encoding="utf-8"), str(last_good))
        except (ConfigErrors, OSError):
            raise err from None
        log.error("%s is invalid; running the last good config %s instead:\n%s",
                  config, site.hash, err.render())
        return site, err.render()


def _register_secrets(site: Site) -> None:
    # Every resolved ${env:..}/${file:..} value and secret field, drivers' included.
    register_secrets_from(site)


def run_agent(config: Path, state_dir: Path, *, log_format: str = "text",
              log_level: str | None = None) -> int:
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
    try:
        site, rejected = _load_with_fallback(config, state_dir)
    except ConfigErrors as err:
        print(err.render(), file=sys.stderr)
        print(f"edge-agent: {config} has {len(err.problems)} problem(s); not starting. "
              f"Fix them and check with: edge-agent check -c {config}", file=sys.stderr)
        return 1
    _register_secrets(site)
    if log_level is None:
        setup_logging(site.config.log_level, log_format)
    if rejected is None and not on_probation(state_dir, site.hash):
        # A pushed config still on probation is not known to be good yet:
        # management resumes its rollback watch instead.
        save_last_good(state_dir, site.text)

    from agent.runtime.agent import Agent

    agent = Agent(site, state_dir)
    if rejected is not None:
        agent.state_extra["config_error"] = rejected

    def reload() -> Site:
        new = load_site(config)
        _register_secrets(new)
        save_last_good(state_dir, new.text)
        return new

    from agent.management import attach_management

    attach_management(agent, config_path=config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(agent.run(reload=reload))
    return 0
