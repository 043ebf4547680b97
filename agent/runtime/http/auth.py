"""The token check: a bearer token or ``?token=``, compared in constant time.

The token is never logged or echoed; a wrong or missing one is a 401 that
the server counts (``edge_agent_http_unauthorized_total``).
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

__all__ = ["presented_token", "token_ok"]


def presented_token(headers: dict[str, str], query: str) -> str | None:
    """The token the client sent: ``Authorization: Bearer X`` first, then ``?token=X``."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    given = parse_qs(query, keep_blank_values=True).get("token")
    return given[0] if given else None


def token_ok(expected: str | None, headers: dict[str, str], query: str) -> bool:
    """True when no token is configured, or the client presented exactly it."""
    if expected is None:
        return True
    given = presented_token(headers, query)
    if given is None:
        return False
    # compare_digest on bytes: its time does not depend on where they differ.
    return hmac.compare_digest(given.encode(), expected.encode())
