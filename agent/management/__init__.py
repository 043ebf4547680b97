"""Remote management over MQTT: commands, metrics, config push with rollback.

See ``README.md`` in this folder for the commands, their arguments and
replies, signing, rollback and the metrics fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.management.service import Management
    from agent.runtime.agent import Agent

__all__ = ["attach_management"]


def attach_management(agent: Agent, *, config_path: Path | None) -> Management:
    """Subscribe to ``cmd/+`` and add the metrics service; call before ``agent.run()``.

    ``config_path`` is the site file a ``config.apply`` rewrites (None: apply
    live only, as in the demo).
    """
    from agent.management.service import Management

    mgmt = Management(agent, config_path)
    agent.uplink.subscribe("cmd/+", mgmt.handle)
    agent.services.append(mgmt.metrics.run)
    agent.services.append(mgmt.pusher.run)
    return mgmt
