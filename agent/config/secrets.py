"""Resolve ``${env:NAME}`` and ``${file:/path}`` references in a loaded tree.

The resolved value is a :class:`SecretText`, so the models can tell a
reference from an inline secret, and its ``repr`` never shows the value.
Problems name the reference, never a value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config.yaml_source import PosDict, PosList
from agent.sdk.types import SecretText

__all__ = ["resolve_references"]

_REF = re.compile(r"\$\{([a-z]+):([^}]*)\}")

Report = Callable[[tuple[str | int, ...], str], None]


def _resolve_one(kind: str, arg: str) -> str:
    if kind == "env":
        if arg not in os.environ:
            raise LookupError(f"environment variable {arg} is not set")
        return os.environ[arg]
    if kind == "file":
        try:
            # A trailing newline is an artefact of `echo x > file`, never a secret.
            return Path(arg).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as err:
            raise LookupError(f"cannot read secret file {arg}: {err.strerror}") from None
    raise LookupError(f"unknown reference ${{{kind}:...}}; use ${{env:NAME}} or ${{file:/path}}")


def _resolve_text(text: str) -> str:
    if "${" not in text:
        return text
    out = _REF.sub(lambda m: _resolve_one(m.group(1), m.group(2)), text)
    if "${" in out and _REF.search(text) is None:
        raise LookupError("malformed reference; use ${env:NAME} or ${file:/path}")
    return SecretText(out)


def resolve_references(node: Any, report: Report, loc: tuple[str | int, ...] = ()) -> Any:
    """Return ``node`` with references resolved in place; report failures."""
    if isinstance(node, PosDict):
        for key in list(node):
            node[key] = resolve_references(node[key], report, (*loc, key))
    elif isinstance(node, PosList):
        for i, item in enumerate(node):
            node[i] = resolve_references(item, report, (*loc, i))
    elif isinstance(node, str):
        try:
            return _resolve_text(node)
        except LookupError as err:
            report(loc, str(err))
            return SecretText("")
    return node
