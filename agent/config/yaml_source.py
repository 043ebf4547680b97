"""Safe YAML loading that keeps line numbers and what the user wrote.

- Built on ``yaml.SafeLoader``: no Python objects, no tags that run code.
- Every mapping is a :class:`PosDict` and every list a :class:`PosList`
  that remember the line of each key / item, so an error can point at the
  exact line.
- Duplicate keys are errors (plain PyYAML keeps the last one silently).
- YAML 1.1 surprises are switched off: ``040001`` stays the string the user
  wrote (1.1 reads octal), ``NO``/``on``/``yes`` stay strings (1.1 reads
  booleans), ``1:30`` stays a string (1.1 reads base 60).  Only
  true/false are booleans and only plain decimal/hex numbers are numbers.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["PosDict", "PosList", "YamlProblem", "load_yaml"]


class PosDict(dict[str, Any]):
    """A mapping that knows its own line and the line of each key (1-based)."""

    line: int
    key_lines: dict[str, int]


class PosList(list[Any]):
    line: int
    item_lines: list[int]


class YamlProblem(Exception):
    def __init__(self, line: int, path: str, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.path = path
        self.message = message


# libyaml's C parser when PyYAML has it (the wheels do): parsing is most of a
# load, and the pure-Python scanner takes ~20x longer (10,000 tags: seconds).
_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[valid-type, misc]
    pass


# Replace YAML 1.1 implicit resolvers with a conservative set (see module doc).
_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:0|[1-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?(?:0|[1-9][0-9_]*)[eE][-+]?[0-9]+"
        r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


def _construct_int(loader: _Loader, node: ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    return int(text, 16) if text.lower().startswith("0x") else int(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _construct_mapping(loader: _Loader, node: MappingNode) -> PosDict:
    result = PosDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool):
            raise YamlProblem(key_node.start_mark.line + 1, "", "mapping keys must be plain text")
        key = str(key)
        if key in result:
            raise YamlProblem(
                key_node.start_mark.line + 1,
                key,
                f"duplicate key {key!r} (first on line {result.key_lines[key]})",
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: SequenceNode) -> PosList:
    result = PosList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def load_yaml(text: str) -> Any:
    """Parse one YAML document; raise :class:`YamlProblem` with a line."""
    loader = _Loader(text)
    try:
        node: Node | None = loader.get_single_node()
        if node is None:
            return None
        return loader.construct_document(node)
    except YamlProblem:
        raise
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        where = ""
        if err.context_mark is not None and err.context_mark.line + 1 != line:
            where = f" ({err.context or 'block'} started on line {err.context_mark.line + 1})"
        raise YamlProblem(line, "", f"YAML syntax: {err.problem or err}{where}") from None
    except yaml.YAMLError as err:
        raise YamlProblem(1, "", f"YAML syntax: {err}") from None
    finally:
        loader.dispose()


def line_of(root: Any, loc: tuple[str | int, ...]) -> int:
    """Best line for a location path: the deepest node of ``loc`` that exists."""
    node = root
    line = getattr(root, "line", 1)
    for part in loc:
        if isinstance(node, PosDict) and isinstance(part, str) and part in node:
            line = node.key_lines[part]
            node = node[part]
        elif isinstance(node, PosList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.item_lines[part]
            node = node[part]
        else:
            break
    return line
