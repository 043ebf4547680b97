"""``config.apply``: validate off the loop, then hand the config to the agent's lifecycle.

Writing the site file, probation, promotion to last-good and rollback are
the agent's (``agent.runtime.reload``): one policy whichever way a config
arrives.  This module only speaks the command: arguments, the problem list
of a refused config, and the early reply when the uplink is about to
reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from agent.config.bounded import parse_site_bounded
from agent.config.site import ConfigErrors
from agent.management.protocol import CommandError
from agent.runtime.reload import ApplyFailed, load_registered

if TYPE_CHECKING:
    from agent.management.service import Call
    from agent.runtime.control import AgentControl

__all__ = ["apply_config"]

log = logging.getLogger("agent.management.config")


async def apply_config(control: AgentControl, call: Call) -> Any:
    text = call.args.get("yaml")
    if not isinstance(text, str):
        raise CommandError("config.apply needs {\"yaml\": \"<the whole site file>\"}")
    try:
        # In a child process with a deadline: validating a big site takes
        # seconds (every device on this loop would miss a poll), and a
        # hostile one must neither pin a core nor hold up a stop.
        checked = await parse_site_bounded(text, control.site_path)
        site = await asyncio.to_thread(load_registered, lambda: checked)
    except ConfigErrors as err:
        lines = await control.refuse(err)
        log.warning("pushed config rejected (%d problem(s)); nothing changed:\n%s",
                    len(lines), "\n".join(lines))
        raise CommandError("\n".join(lines), problems=lines) from None
    try:
        # The uplink will reconnect: answer while the old session still exists.
        result = await control.apply(site, before_switch=call.answer)
    except OSError as err:
        raise CommandError(f"cannot write {control.site_path}: {err.strerror}; "
                           "nothing changed") from None
    except ApplyFailed as err:
        raise CommandError(f"config {site.hash} refused: {err}; nothing changed") from None
    return None if call.answered else result
