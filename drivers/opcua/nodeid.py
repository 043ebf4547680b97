"""NodeId strings as a technician writes them, parsed without asyncua.

Two forms are accepted:

- ``ns=2;s=Line1.Speed``: a namespace *index*.  Indexes are server-local
  and may change when a server restarts or loads another model.
- ``nsu=urn:line1;s=Line1.Speed``: a namespace *URI*, resolved against the
  server's namespace array at every connect, so a reordered array still maps
  to the right node.  ``edge-agent browse`` prints this form.

The identifier kinds are ``i=`` (numeric), ``s=`` (string), ``g=`` (GUID)
and ``b=`` (base64 opaque).  Without a namespace part the node is in ns=0.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass

__all__ = ["NodeRef", "UnknownNamespace", "parse_node"]

_NODE_RE = re.compile(
    r"^(?:(?:ns=(?P<ns>\d+)|nsu=(?P<nsu>[^;]+));)?(?P<kind>[isgb])=(?P<ident>.+)$", re.DOTALL)
_UINT32_MAX = 2**32 - 1
_UINT16_MAX = 2**16 - 1


class UnknownNamespace(LookupError):
    """An ``nsu=`` URI the server does not (or no longer) publish."""


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A parsed node string; ``index`` xor ``uri`` names the namespace."""

    index: int | None
    uri: str | None
    kind: str  # 'i', 's', 'g' or 'b'
    ident: int | str | uuid.UUID | bytes

    def resolve_index(self, namespaces: list[str]) -> int:
        """The namespace index on this server (raises UnknownNamespace)."""
        if self.uri is None:
            return self.index or 0
        try:
            return namespaces.index(self.uri)
        except ValueError:
            raise UnknownNamespace(f"namespace {self.uri} is not on the server") from None


def parse_node(text: str) -> NodeRef:
    """Parse ``[ns=N;|nsu=URI;](i|s|g|b)=ID``; ValueError says what is wrong."""
    match = _NODE_RE.match(text.strip())
    if match is None:
        raise ValueError(
            f"node {text!r} is not a NodeId; expected e.g. ns=2;s=Line1.Speed, "
            "nsu=urn:plant;s=Line1.Speed or i=2258"
        )
    ns, nsu, kind, raw = match.group("ns", "nsu", "kind", "ident")
    index = int(ns) if ns is not None else (None if nsu is not None else 0)
    if index is not None and index > _UINT16_MAX:
        raise ValueError(f"namespace index {index} is above 65535")
    ident: int | str | uuid.UUID | bytes
    if kind == "i":
        if not raw.isdigit() or int(raw) > _UINT32_MAX:
            raise ValueError(f"numeric identifier {raw!r} must be 0..4294967295")
        ident = int(raw)
    elif kind == "g":
        try:
            ident = uuid.UUID(raw)
        except ValueError:
            raise ValueError(f"GUID identifier {raw!r} is not a GUID") from None
    elif kind == "b":
        try:
            ident = base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise ValueError(f"opaque identifier {raw!r} is not base64") from None
    else:
        ident = raw
    return NodeRef(index=index, uri=nsu, kind=kind, ident=ident)
