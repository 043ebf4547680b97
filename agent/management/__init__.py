"""Remote management over MQTT: commands, metrics, config push with rollback.

See ``README.md`` in this folder for the commands, their arguments and
replies, signing, rollback and the metrics fields.  Management sees the
agent only through :class:`agent.runtime.control.AgentControl`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.management.service import Management
    from agent.runtime.agent import Agent

__all__ = ["attach_management"]


def attach_management(agent: Agent, *, config_path: Path | None = None) -> Management:
    """Subscribe to ``cmd/+`` and add the metrics service; call before ``agent.run()``.

    ``config_path`` is the site file a ``config.apply`` rewrites, when the
    agent's store does not name one yet (None: apply live only, as in the demo).
    """
    from agent.management.service import Management
    from agent.runtime.control import AgentControl

    if config_path is not None and agent.store.site_path is None:
        agent.store.site_path = config_path
    control = AgentControl(agent)
    mgmt = Management(control)
    control.subscribe("cmd/+", mgmt.handle)
    control.add_service(mgmt.metrics.run)
    return mgmt
