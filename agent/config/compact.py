"""Make a validated site cheap to keep: shared values, tags by column (see TagTable)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from agent.sdk.tag_table import TagTable

if TYPE_CHECKING:
    from agent.config.site import Site

__all__ = ["compact_site"]


def compact_site(site: Site) -> None:
    """Keep the tags of a validated site in a third of the memory, equal as before.

    One pydantic model per tag is ~980 B on a 10,000-tag site: the object,
    its ``__dict__`` of every field (~550 B), its own set of the keys the
    file gave (216 B) and its own copy of every value ("uint16", 1.0, 0.0
    ...).  Equal values become one object, and each device's tags become a
    :class:`TagTable`: per field, the one value all tags share or a tuple of
    one per tag (a Modbus tag that gives name, address and type: ~130 B with
    its name and address), the same models built on access.  Pickle then
    sends each shared value once.
    Every device compares, dumps and validates as before.
    """
    sets: dict[frozenset[str], set[str]] = {}
    values: dict[tuple[type, object], object] = {}
    for device in site.devices:
        if isinstance(device.tags, TagTable):
            continue  # compacted already
        for tag in device.tags:
            if not isinstance(tag, BaseModel) or not tag.model_config.get("frozen"):
                continue
            given = tag.__pydantic_fields_set__
            shared = sets.setdefault(frozenset(given), given)
            if shared is not given:
                object.__setattr__(tag, "__pydantic_fields_set__", shared)
            fields = tag.__dict__
            for key, value in fields.items():
                if type(value) in _SCALARS:
                    # By type too: 1 == 1.0 == True must stay three values.
                    one = values.setdefault((type(value), value), value)
                    if one is not value:
                        fields[key] = one
        table = TagTable.of(device.tags)
        if table is not None:
            # The device is frozen; this is validation finishing it, not a change.
            device.__dict__["tags"] = table


_SCALARS = frozenset({str, float, int})
