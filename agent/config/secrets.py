"""Resolve ``${env:NAME}`` and ``${file:/path}`` references in a loaded tree.

The resolved value is a :class:`SecretText`, so the models can tell a
reference from an inline secret, and its ``repr`` never shows the value.
Problems name the reference, never a value.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from typing import Any

from agent.config.limits import MAX_SECRET_BYTES, human_size
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
        # A trailing newline is an artefact of `echo x > file`, never a secret.
        return _read_secret_file(arg).rstrip("\r\n")
    raise LookupError(f"unknown reference ${{{kind}:...}}; use ${{env:NAME}} or ${{file:/path}}")


def _read_secret_file(path: str) -> str:
    """A small regular UTF-8 file, or LookupError naming it.

    A pushed config chooses the path: /dev/zero must not fill memory, a FIFO
    must not block validation, and /dev/watchdog must not even be opened,
    so the type is checked before the open and the read is bounded.
    """
    shown = path if len(path) <= 200 else path[:200] + "..."
    if "\0" in path:
        raise LookupError(f"secret file path {shown!r} contains a NUL character")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise LookupError(f"secret file {shown} is not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
                raise LookupError(f"secret file {shown} is not a regular file")
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as err:
        raise LookupError(f"cannot read secret file {shown}: {err.strerror}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise LookupError(f"secret file {shown} is larger than {human_size(MAX_SECRET_BYTES)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise LookupError(f"secret file {shown} is not UTF-8 text "
                          "(store a binary key base64-encoded)") from None


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
    elif isinstance(node, str) and not isinstance(node, SecretText):
        # A SecretText is already resolved (an alias shares it): a secret
        # value that happens to contain "${file:..}" is never followed.
        try:
            return _resolve_text(node)
        except LookupError as err:
            report(loc, str(err))
            return SecretText("")
    return node
