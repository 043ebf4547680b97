"""The wire shape of commands and replies (SPEC.md, MQTT section).

A request is ``{"id", "args", ...}`` on ``.../cmd/{command}``; a reply is
``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error"}``.  Every
way a request can be wrong becomes a :class:`CommandError`, which the
dispatcher turns into an error reply: nothing a sender does ends in silence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_ID",
    "MAX_REQUEST_BYTES",
    "CommandError",
    "Request",
    "error_reply",
    "ok_reply",
    "parse_request",
]

# Ids are echoed in replies and kept in the replay cache: keep them short.
MAX_ID = 128
# The largest request is a config.apply: an 8MB site file, JSON-escaped.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
# No command takes arguments nested deeper; json.loads itself raises
# RecursionError near 1,000 levels, and signing re-encodes the request.
MAX_DEPTH = 32


class CommandError(Exception):
    """A refusal or failure that is answered with ``ok: false``.

    ``extra`` adds keys to the reply (e.g. ``problems`` of a rejected config).
    """

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


@dataclass(frozen=True)
class Request:
    command: str
    id: str
    args: dict[str, Any]
    # The whole decoded payload, as signed by the sender (``sig`` included).
    raw: dict[str, Any] = field(repr=False)


def _depth(obj: Any) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                break
            stack.extend((v, level + 1) for v in (node.values() if isinstance(node, dict)
                                                  else node))
    return deepest


def _decode(payload: bytes) -> Any:
    """The JSON value of a request, or CommandError: never another exception."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise CommandError(f"malformed request: larger than {MAX_REQUEST_BYTES // 1024**2}MB")
    try:
        # Decoded here: json.loads(bytes) would guess UTF-16/32 from a BOM.
        obj = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise CommandError("malformed request: payload is not UTF-8") from None
    except ValueError as err:
        raise CommandError(f"malformed request: not JSON ({err})") from None
    except RecursionError:
        raise CommandError(f"malformed request: nested deeper than {MAX_DEPTH} levels") from None
    if _depth(obj) > MAX_DEPTH:
        raise CommandError(f"malformed request: nested deeper than {MAX_DEPTH} levels")
    return obj


# An "id" near the start of a request too deep to decode (a sender's own
# id comes first; a nested one would only make the refusal less useful).
_ID_NEAR_START = re.compile(rb'^\s*\{\s*"id"\s*:\s*"([^"\\]{1,%d})"' % MAX_ID)


def best_effort_id(payload: bytes) -> str | None:
    """The ``id`` of a request we are about to refuse, if one can be found.

    Called before the dispatcher's ``try``: it must not raise, whatever the
    payload (JSON nested thousands deep raised RecursionError: no reply).
    """
    if len(payload) > MAX_REQUEST_BYTES:
        return None
    try:
        obj = json.loads(payload.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one
        return None
    except RecursionError:
        match = _ID_NEAR_START.match(payload[:1024])
        return match.group(1).decode("utf-8", "replace") if match else None
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, str) and len(rid) <= MAX_ID:
            return rid
    return None


def parse_request(command: str, payload: bytes) -> Request:
    """Decode and shape-check one request; raise CommandError when malformed."""
    obj = _decode(payload)
    if not isinstance(obj, dict):
        raise CommandError("malformed request: expected a JSON object {\"id\", \"args\"}")
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid:
        raise CommandError("malformed request: \"id\" must be a non-empty string")
    if len(rid) > MAX_ID:
        raise CommandError(f"malformed request: \"id\" is longer than {MAX_ID} characters")
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise CommandError("malformed request: \"args\" must be an object")
    return Request(command=command, id=rid, args=args, raw=obj)


def ok_reply(rid: str | None, result: Any) -> dict[str, Any]:
    return {"id": rid, "ok": True, "result": result}


def error_reply(rid: str | None, message: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": message, **extra}
