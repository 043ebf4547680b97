"""The position tree built straight from libyaml's events: the common case, in one pass.

:func:`agent.config.yaml_source.load_yaml` composes a tree of YAML nodes in
Python and then constructs the values from it: two passes and ~70,000 node
objects for a 10,000-tag site (most of ``check``'s time).  A document with
no anchors, aliases or tags (nearly every site file) needs neither: here
the same :class:`PosDict`/:class:`PosList` tree, lines included, is built
while libyaml's events stream past, with the same resolvers and constructors.

Anything else (an anchor or alias, an explicit tag, nesting past the bound,
a key that is not plain text, a duplicate key, a second document, any
error) returns :data:`UNSUPPORTED`, and the caller takes the node path, so
every answer and every problem reported stays that path's own.
"""

from __future__ import annotations

from typing import Any

from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import ScalarNode

from agent.config.limits import MAX_DEPTH

__all__ = ["UNSUPPORTED", "build_from_events"]

#: "Take the node path": returned instead of raising, whatever the reason.
UNSUPPORTED: Any = object()

_KEYS = (str, int, float, bool)


def build_from_events(loader: Any, dict_type: type[Any], list_type: type[Any]) -> Any:
    """The document ``loader`` (a libyaml-backed loader) holds, or :data:`UNSUPPORTED`."""
    try:
        return _build(loader, dict_type, list_type)
    except Exception:  # every problem is the node path's to word
        return UNSUPPORTED


def _build(loader: Any, dict_type: type[Any], list_type: type[Any]) -> Any:
    get = loader.get_event
    constructors = loader.yaml_constructors
    resolve = loader.resolve
    if type(get()) is not StreamStartEvent:
        return UNSUPPORTED
    first = get()
    if type(first) is StreamEndEvent:
        return None  # an empty stream, as the node path answers
    if type(first) is not DocumentStartEvent:
        return UNSUPPORTED
    # One frame per open mapping or sequence: [container, is a mapping, key or None, key line].
    stack: list[list[Any]] = []
    root: Any = UNSUPPORTED
    while True:
        event = get()
        kind = type(event)
        if kind is MappingEndEvent or kind is SequenceEndEvent:
            value = stack.pop()[0]
        elif kind is DocumentEndEvent:
            break
        else:
            if event.anchor is not None or event.tag is not None or len(stack) >= MAX_DEPTH:
                return UNSUPPORTED  # covers aliases too: they carry an anchor
            line = event.start_mark.line + 1
            parent = stack[-1] if stack else None
            if kind is ScalarEvent:
                tag = resolve(ScalarNode, event.value, event.implicit)
                construct = constructors.get(tag)
                if construct is None:
                    return UNSUPPORTED
                node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
                value = construct(loader, node)
                if parent is not None and parent[1] and parent[2] is None:
                    # A key: plain text, once per mapping.
                    if not isinstance(value, _KEYS):
                        return UNSUPPORTED
                    key = str(value)
                    if key in parent[0]:
                        return UNSUPPORTED
                    parent[2], parent[3] = key, line
                    continue
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if parent is not None and parent[1] and parent[2] is None:
                    return UNSUPPORTED  # a mapping or list as a key
                container = dict_type() if kind is MappingStartEvent else list_type()
                container.line = line
                if kind is MappingStartEvent:
                    container.key_lines = {}
                else:
                    container.item_lines = []
                if parent is not None and not parent[1]:
                    parent[0].item_lines.append(line)
                stack.append([container, kind is MappingStartEvent, None, 0])
                continue
            else:
                return UNSUPPORTED
            if parent is not None and not parent[1]:
                parent[0].item_lines.append(line)
        # A finished value: into its parent, or the document's root.
        if not stack:
            root = value
            continue
        parent = stack[-1]
        if parent[1]:
            key = parent[2]
            parent[0][key] = value
            parent[0].key_lines[key] = parent[3]
            parent[2] = None
        else:
            parent[0].append(value)
    if type(get()) is not StreamEndEvent:
        return UNSUPPORTED  # a second document: the node path says so
    return None if root is UNSUPPORTED else root
