"""Walk a server's address space and render a ready-to-paste ``tags:`` block.

Nodes are printed in ``nsu=`` form (namespace URI, not index), so the block
keeps working when the server reorders its namespaces.  The data type and
whether the server allows writes are comments: ``writable:`` in the site
file is a decision for whoever commissions the device, not for a tool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds

__all__ = ["Variable", "browse", "node_text", "render_tags"]

_HAS_PROPERTY = 46
_SERVER_OBJECT = ObjectIds.Server  # thousands of diagnostics: skipped unless it is the root
_CURRENT_WRITE = 0x02  # AccessLevel bit
_MAX_PER_CALL = 500


@dataclass(frozen=True)
class Variable:
    node: str
    path: tuple[str, ...]
    data_type: str
    writable: bool
    array: bool


def node_text(node: ua.NodeId, namespaces: Sequence[str]) -> str:
    """``nsu=URI;s=..`` (or ``i=..`` for namespace 0)."""
    local = ua.NodeId(node.Identifier, 0, node.NodeIdType).to_string()  # type: ignore[arg-type]
    if node.NamespaceIndex == 0:
        return local
    if node.NamespaceIndex < len(namespaces):
        return f"nsu={namespaces[node.NamespaceIndex]};{local}"
    return f"ns={node.NamespaceIndex};{local}"


async def _children(
    client: Client, parents: list[ua.NodeId]
) -> list[list[ua.ReferenceDescription]]:
    out: list[list[ua.ReferenceDescription]] = []
    for start in range(0, len(parents), _MAX_PER_CALL):
        params = ua.BrowseParameters()
        params.RequestedMaxReferencesPerNode = 0
        for parent in parents[start:start + _MAX_PER_CALL]:
            desc = ua.BrowseDescription()
            desc.NodeId = parent
            desc.BrowseDirection = ua.BrowseDirection.Forward
            desc.ReferenceTypeId = ua.NodeId(ObjectIds.HierarchicalReferences)  # type: ignore[arg-type]
            desc.IncludeSubtypes = True
            desc.NodeClassMask = int(ua.NodeClass.Object | ua.NodeClass.Variable)
            desc.ResultMask = int(ua.BrowseResultMask.All)
            params.NodesToBrowse.append(desc)
        for result in await client.uaclient.browse(params):
            refs = list(result.References)
            point = result.ContinuationPoint
            while point:
                more = ua.BrowseNextParameters()
                more.ContinuationPoints = [point]
                next_result = (await client.uaclient.browse_next(more))[0]
                refs.extend(next_result.References)
                point = next_result.ContinuationPoint
            out.append(refs)
    return out


async def _describe(client: Client, nodes: list[ua.NodeId]) -> list[tuple[str, bool, bool]]:
    """(data type name, server allows writes, is array) per variable."""
    attrs = (AttributeIds.DataType, AttributeIds.AccessLevel, AttributeIds.ValueRank)
    values: list[ua.DataValue] = []
    for start in range(0, len(nodes), _MAX_PER_CALL // 3):
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=a)
                              for n in nodes[start:start + _MAX_PER_CALL // 3] for a in attrs]
        values.extend(await client.uaclient.read(params))
    custom = {}
    out = []
    for i in range(len(nodes)):
        dtype, access, rank = (v.Value.Value if v.Value is not None else None
                               for v in values[3 * i:3 * i + 3])
        if isinstance(dtype, ua.NodeId) and dtype.NamespaceIndex == 0:
            name = ObjectIdNames.get(dtype.Identifier, dtype.to_string())  # type: ignore[arg-type]
        elif isinstance(dtype, ua.NodeId):
            custom[i] = dtype
            name = dtype.to_string()
        else:
            name = "unknown"
        writable = bool((access or 0) & _CURRENT_WRITE)
        out.append((name, writable, bool(rank is not None and rank >= 1)))
    if custom:
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=AttributeIds.BrowseName)
                              for n in custom.values()]
        for i, dv in zip(custom, await client.uaclient.read(params), strict=True):
            if dv.Value is not None and isinstance(dv.Value.Value, ua.QualifiedName):
                out[i] = (str(dv.Value.Value.Name), out[i][1], out[i][2])
    return out


async def browse(client: Client, root: ua.NodeId, depth: int) -> list[Variable]:
    """Every variable at most ``depth`` levels below ``root``, in browse order."""
    namespaces = await client.get_namespace_array()
    found: list[tuple[ua.NodeId, tuple[str, ...]]] = []
    level: list[tuple[ua.NodeId, tuple[str, ...]]] = [(root, ())]
    seen = {root}
    for _ in range(depth):
        if not level:
            break
        children = await _children(client, [n for n, _ in level])
        nxt: list[tuple[ua.NodeId, tuple[str, ...]]] = []
        for (_, path), refs in zip(level, children, strict=True):
            for ref in refs:
                node = ua.NodeId(ref.NodeId.Identifier, ref.NodeId.NamespaceIndex,
                                 ref.NodeId.NodeIdType)
                skip = ref.ReferenceTypeId == ua.NodeId(_HAS_PROPERTY) or (  # type: ignore[arg-type]
                    node == ua.NodeId(_SERVER_OBJECT) and root != node)  # type: ignore[arg-type]
                if skip or node in seen:
                    continue
                seen.add(node)
                child_path = (*path, str(ref.BrowseName.Name))
                if ref.NodeClass == ua.NodeClass.Variable:
                    found.append((node, child_path))
                nxt.append((node, child_path))
        level = nxt
    described = await _describe(client, [n for n, _ in found]) if found else []
    return [Variable(node_text(n, namespaces), path, dt, w, arr)
            for (n, path), (dt, w, arr) in zip(found, described, strict=True)]


def _tag_name(path: tuple[str, ...]) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", ".".join(path)).strip("_.-")
    return name if name and name[0].isalnum() else f"tag_{name}"


def render_tags(variables: Sequence[Variable], header: str = "") -> str:
    """The YAML ``tags:`` block (names made unique and valid)."""
    lines = [f"# {header}"] if header else []
    lines.append("tags:")
    used: set[str] = set()
    for var in variables:
        base = _tag_name(var.path)
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        notes = var.data_type + ("[]" if var.array else "")
        notes += ", writable on the server" if var.writable else ""
        # JSON strings are valid YAML double-quoted scalars: safe for any identifier.
        lines.append(f"  - {{name: {json.dumps(name)}, node: {json.dumps(var.node)}}}  # {notes}")
    if not variables:
        lines[-1] = "tags: []  # no variables found; try another --root or a larger --depth"
    return "\n".join(lines) + "\n"
