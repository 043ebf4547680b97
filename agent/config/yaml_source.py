"""Safe YAML loading that keeps line numbers and what the user wrote.

- Built on ``yaml.SafeLoader``: no Python objects, no tags that run code.
- Every mapping is a :class:`PosDict` and every list a :class:`PosList`
  that remember the line of each key / item, so an error can point at the
  exact line.
- Duplicate keys are errors (plain PyYAML keeps the last one silently).
- Explicit tags (``!!float``, ``!!binary``, ``!custom``) are errors: no
  setting needs one.
- Hostile input is a problem with a line, never an exception or a hang:
  control characters, nesting past ``MAX_DEPTH``, aliases that expand past
  ``MAX_NODES`` (a "billion laughs") or into themselves, and integers with
  more than ``MAX_INT_DIGITS`` digits (see :mod:`agent.config.limits`).
- YAML 1.1 surprises are switched off: ``040001`` stays the string the user
  wrote (1.1 reads octal), ``NO``/``on``/``yes`` stay strings (1.1 reads
  booleans), ``1:30`` stays a string (1.1 reads base 60).  Only
  true/false are booleans and only plain decimal/hex numbers are numbers.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from agent.config.limits import MAX_DEPTH, MAX_INT_DIGITS, MAX_NODES

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


class _PyParser(Reader, Scanner, Parser):
    """The pure-Python reader, scanner and parser (PyYAML built without libyaml)."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)


_Parser: Any = _PyParser
with contextlib.suppress(ImportError):
    # libyaml scans and parses in C, five times faster (30,000 keys: 0.3 s,
    # not 1.5 s).  Composition stays in Python (Composer comes first in the
    # MRO), so the depth bound below holds either way.
    from yaml._yaml import CParser

    _Parser = CParser


class _Loader(Composer, _Parser, SafeConstructor, Resolver):  # type: ignore[misc]
    def __init__(self, text: str) -> None:
        _Parser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self.aliases = False  # without any, the expansion check has nothing to find
        # The key path being constructed, so a constructor's problem names it.
        self.path: list[str | int] = []

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # The composer recurses once per level: stop long before Python's
        # stack does (a RecursionError would escape as a crash).
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlProblem(mark.line + 1, "", f"nested deeper than {MAX_DEPTH} levels")
            event = self.peek_event()
            if type(event) is AliasEvent:
                self.aliases = True
            tag = getattr(event, "tag", None)
            if tag is not None:
                # No setting needs one, and PyYAML's own constructors crash on
                # a bad value ("!!timestamp x": AttributeError, "!!float x").
                shown = tag.replace("tag:yaml.org,2002:", "!!")[:40]
                raise YamlProblem(event.start_mark.line + 1, "",
                                  f"YAML tags such as {shown!r} are not supported; "
                                  "write the plain value")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def where(self) -> str:
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out


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
    if len(text.lstrip("+-")) > MAX_INT_DIGITS:
        raise YamlProblem(node.start_mark.line + 1, loader.where(),
                          f"number has more than {MAX_INT_DIGITS} digits")
    return int(text, 16) if text.lower().startswith("0x") else int(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _construct_str(loader: _Loader, node: ScalarNode) -> str:
    text = str(loader.construct_scalar(node))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # "\uD800" is a valid YAML escape but no text: it would fail much
        # later, encoding a topic or a JSON message.
        raise YamlProblem(node.start_mark.line + 1, loader.where(),
                          "text holds a lone surrogate (\\uD800-\\uDFFF)") from None
    return text


_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)


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
        loader.path.append(key)
        try:
            result[key] = loader.construct_object(value_node, deep=True)
        finally:
            loader.path.pop()
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: SequenceNode) -> PosList:
    result = PosList()
    for i, child in enumerate(node.value):
        loader.path.append(i)
        try:
            result.append(loader.construct_object(child, deep=True))
        finally:
            loader.path.pop()
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Node) -> None:
    """Refuse alias graphs that expand past the bounds, or into themselves.

    Composition shares one node per anchor, so a 600-byte file can stand
    for 10**9 nodes once each alias is walked; this measures the expanded
    size and depth on the shared graph (each node once, no recursion).
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()  # entered, not finished: the current path
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        line = node.start_mark.line + 1
        if finished:
            open_.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_NODES:
                raise YamlProblem(line, "", f"aliases expand to more than {MAX_NODES} nodes")
            if depth[key] > MAX_DEPTH:
                raise YamlProblem(line, "", f"aliases nest deeper than {MAX_DEPTH} levels")
            continue
        if key in size:
            continue
        if key in open_:
            raise YamlProblem(line, "", "an alias refers to a node that contains it")
        open_.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node) if id(kid) not in size)


def _reader_problem(text: str, err: yaml.reader.ReaderError) -> YamlProblem:
    # Raised before any mark exists: the line comes from the offset.
    line = text.count("\n", 0, err.position) + 1
    char = f"U+{err.character:04X}" if isinstance(err.character, int) else repr(err.character)
    return YamlProblem(line, "", f"YAML syntax: character {char} is not allowed in YAML "
                                 "(control characters must be written as escapes)")


def load_yaml(text: str) -> Any:
    """Parse one YAML document; raise :class:`YamlProblem` with a line."""
    loader: _Loader | None = None
    try:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            # Only from a JSON string (config.apply): a lone surrogate.
            raise YamlProblem(text.count("\n", 0, err.start) + 1, "",
                              f"YAML syntax: character U+{ord(text[err.start]):04X} is not "
                              "allowed (a lone surrogate is not text)") from None
        # The reader checks every character as it is built: inside the try.
        loader = _Loader(text)
        if _Parser is not _PyParser:
            # libyaml: most files need no node tree (agent.config.yaml_events);
            # whatever that pass declines is parsed again below, the long way.
            from agent.config.yaml_events import UNSUPPORTED, build_from_events

            built = build_from_events(loader, PosDict, PosList)
            if built is not UNSUPPORTED:
                return built
            loader = _Loader(text)
        node: Node | None = loader.get_single_node()
        if node is None:
            return None
        if loader.aliases:
            _check_expansion(node)
        return loader.construct_document(node)
    except YamlProblem:
        raise
    except yaml.reader.ReaderError as err:
        raise _reader_problem(text, err) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        if "maximum nesting depth" in str(err.problem):  # libyaml's own bound (1,000)
            raise YamlProblem(mark.line + 1 if mark else 1, "",
                              f"nested deeper than {MAX_DEPTH} levels") from None
        line = mark.line + 1 if mark else 1
        where = ""
        if err.context_mark is not None and err.context_mark.line + 1 != line:
            where = f" ({err.context or 'block'} started on line {err.context_mark.line + 1})"
        raise YamlProblem(line, "", f"YAML syntax: {err.problem or err}{where}") from None
    except yaml.YAMLError as err:
        raise YamlProblem(1, "", f"YAML syntax: {err}") from None
    finally:
        if loader is not None:
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
