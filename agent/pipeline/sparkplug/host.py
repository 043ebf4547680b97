"""The primary host's STATE: ``spBv1.0/STATE/{host}``, retained JSON.

``{"online": true|false, "timestamp": ms}``; a message older than the last
one accepted is ignored (a stale retained message must not win).
"""

from __future__ import annotations

import json
import logging

__all__ = ["HostState"]

log = logging.getLogger("agent.sparkplug")


class HostState:
    def __init__(self, host: str) -> None:
        self.host = host
        self.online = False
        self.timestamp = -1
        self.bad_messages = 0

    def update(self, payload: bytes) -> bool | None:
        """Apply a STATE message; the new online flag, or None when it was ignored."""
        try:
            obj = json.loads(payload)
            online = obj["online"]
            ts = obj["timestamp"]
            if not isinstance(online, bool) or not isinstance(ts, int) or isinstance(ts, bool):
                raise ValueError("online must be a boolean and timestamp an integer")
        except (ValueError, KeyError, TypeError) as err:
            self.bad_messages += 1
            log.warning("sparkplug: STATE of host %s ignored: %s", self.host, err)
            return None
        if ts < self.timestamp:
            log.debug("sparkplug: STATE of %s older than the last one: ignored", self.host)
            return None
        self.timestamp = ts
        self.online = online
        return online
