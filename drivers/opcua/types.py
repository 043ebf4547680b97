"""Which built-in type a node holds, for coercing writes.

The DataType attribute names it directly for the built-in types (ids 1..25
in namespace 0 equal the VariantType numbers) and for a few well-known
ns=0 subtypes.  For anything else (enumerations, vendor subtypes) the
variant type of the node's current value is what the server expects.
"""

from __future__ import annotations

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds

__all__ = ["variant_type"]

# Common ns=0 subtypes of built-in types, by DataType id.
_SUBTYPES: dict[int, ua.VariantType] = {
    290: ua.VariantType.Double,    # Duration
    294: ua.VariantType.DateTime,  # UtcTime
    288: ua.VariantType.UInt32,    # IntegerId
    289: ua.VariantType.UInt32,    # Counter
    295: ua.VariantType.String,    # LocaleId
    12878: ua.VariantType.String,  # NormalizedString
    12879: ua.VariantType.String,  # DecimalString
    12880: ua.VariantType.String,  # DurationString
    12881: ua.VariantType.String,  # TimeString
    12882: ua.VariantType.String,  # DateString
    311: ua.VariantType.ByteString,  # ApplicationInstanceCertificate
}
_ARRAY_RANKS = (-2, 0)  # "any" and "one or more dimensions": decided by the value


async def variant_type(client: Client, node: ua.NodeId) -> tuple[ua.VariantType, bool]:
    """(built-in type, is_array) of ``node``; raises ValueError if unknown."""
    params = ua.ReadParameters()
    params.NodesToRead = [
        ua.ReadValueId(NodeId=node, AttributeId=attr)
        for attr in (AttributeIds.DataType, AttributeIds.ValueRank, AttributeIds.Value)
    ]
    dtype_dv, rank_dv, value_dv = await client.uaclient.read(params)
    for dv in (dtype_dv, rank_dv):
        if dv.StatusCode is not None and dv.StatusCode.is_bad():
            raise ValueError(dv.StatusCode.name)
    dtype = dtype_dv.Value.Value if dtype_dv.Value is not None else None
    rank = rank_dv.Value.Value if rank_dv.Value is not None else None
    current = value_dv.Value
    current_ok = value_dv.StatusCode is None or not value_dv.StatusCode.is_bad()
    vtype: ua.VariantType | None = None
    if isinstance(dtype, ua.NodeId) and dtype.NamespaceIndex == 0 and isinstance(
        dtype.Identifier, int
    ):
        if 1 <= dtype.Identifier <= 21:
            vtype = ua.VariantType(dtype.Identifier)
        else:
            vtype = _SUBTYPES.get(dtype.Identifier)
    has_value = current_ok and current is not None and current.VariantType != ua.VariantType.Null
    if vtype is None and current is not None and has_value:
        vtype = current.VariantType
    if vtype is None:
        raise ValueError(f"the node's DataType {dtype} is not a type edge-agent can write")
    if rank is not None and rank >= 1:
        is_array = True
    elif rank in _ARRAY_RANKS:
        is_array = current_ok and current is not None and isinstance(current.Value, list)
    else:
        is_array = False
    return vtype, is_array
