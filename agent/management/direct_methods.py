"""Azure IoT Hub direct methods as management commands.

The hub delivers a method call on ``$iothub/methods/POST/{method}/?$rid={rid}``
with the caller's JSON payload, and expects exactly one answer on
``$iothub/methods/res/{status}/?$rid={rid}``.  The method name is the
command (``ping``, ``config.apply``, ...), the payload is the usual request
body (``{"args": ...}``, plus ``ts``/``sig`` when commands are signed); a
request without an ``id`` takes the hub's ``$rid``.  The status is 200 for
an ok reply and 400 for an error reply; the body is the usual reply.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

__all__ = ["STATUS", "MethodCall", "parse_method", "reply_topic"]

PREFIX = "$iothub/methods/POST/"
#: Placeholder in a reply topic, filled when the reply is known.
STATUS = "{status}"


class MethodCall:
    def __init__(self, command: str, rid: str, payload: bytes) -> None:
        self.command = command
        self.rid = rid
        self.payload = payload


def parse_method(topic: str, payload: bytes) -> MethodCall | None:
    """The call on a direct-method topic, or None for any other topic."""
    if not topic.startswith(PREFIX):
        return None
    method, _, query = topic[len(PREFIX):].partition("/")
    rid = (parse_qs(query.lstrip("?")).get("$rid") or [""])[0]
    try:
        body = json.loads(payload) if payload.strip() else {}
    except ValueError:
        return MethodCall(method, rid, payload)  # the parser answers with the error
    if isinstance(body, dict) and "id" not in body:
        payload = json.dumps({**body, "id": rid}).encode()
    return MethodCall(method, rid, payload)


def reply_topic(rid: str) -> str:
    return f"$iothub/methods/res/{STATUS}/?$rid={rid}"
