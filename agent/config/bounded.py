"""Validate an untrusted site file in a child process the agent can kill.

``config.apply`` hands us text from the network.  The loader's bounds
(:mod:`agent.config.limits`) make every known hostile input fail fast, but
validation also runs driver models and reads ``${file:..}`` secrets, and a
thread cannot be stopped: one stuck validation used to pin a core for good
and keep the process alive after SIGTERM (the executor thread was waited
for).  Here the work runs in ``python -m agent.config.bounded``: past the
deadline, or when the agent stops (the awaiting task is cancelled), the
child is killed and nothing of it remains.

The child inherits the environment and the working directory, so
``${env:..}`` and relative ``${file:..}`` resolve as they would in the
agent.  Its answer is a pickled :class:`Site` or the problems, on a copy of
its stdout that nothing else writes to (its fd 1 is pointed at stderr
first, so a library's print cannot forge the answer).  One validation runs at a time; a
second push meanwhile is answered at once instead of queueing CPU work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import sys
from typing import Any

from agent.config.limits import VALIDATE_TIMEOUT_S
from agent.config.load import ConfigErrors, Problem, Site, parse_site

__all__ = ["parse_site_bounded"]

log = logging.getLogger("agent.config")

_busy = False  # one child at a time (per process: the agent has one loop)
_MAGIC = b"edge-agent-validator/1\n"


def _fail(source: str | None, message: str) -> ConfigErrors:
    return ConfigErrors([Problem(1, "", message)], source)


async def parse_site_bounded(text: str, source: str | None = None, *,
                             limit_s: float = VALIDATE_TIMEOUT_S) -> Site:
    """:func:`parse_site` in a child process with a deadline.

    Raises :class:`ConfigErrors` for every way it can fail, including the
    deadline ``limit_s`` and a busy validator; cancelling the caller kills
    the child.
    """
    global _busy
    if _busy:
        raise _fail(source, "another pushed config is being validated; retry when it is answered")
    _busy = True
    proc: asyncio.subprocess.Process | None = None
    try:
        request = json.dumps({"text": text, "source": source}).encode()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.config.bounded",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(request), limit_s)
        except TimeoutError:
            log.warning("validation of a pushed config took over %g s: stopped", limit_s)
            raise _fail(source, f"validation took longer than {limit_s:g} s; "
                                "nothing was applied") from None
        try:
            if not out.startswith(_MAGIC):
                raise ValueError("no answer")
            # Our own child, on a pipe only it writes (see _child).
            answer = pickle.loads(out[len(_MAGIC):])  # noqa: S301
        except Exception:  # a child killed mid-write (OOM) leaves garbage
            log.warning("config validator exited with %s: %s", proc.returncode,
                        err.decode(errors="replace")[-500:])
            raise _fail(source, f"validation failed (the validator exited with code "
                                f"{proc.returncode}); nothing was applied") from None
        if answer[0] == "ok":
            site: Site = answer[1]
            return site
        raise ConfigErrors([Problem(*p) for p in answer[1]], source)
    finally:
        _busy = False
        if proc is not None and proc.returncode is None:
            # Deadline or cancellation (the agent stopping): never wait on it.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(proc.wait())


def _child() -> int:
    answer_to = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else prints goes to stderr, never into the answer
    sys.stdout = sys.stderr
    request: dict[str, Any] = json.loads(sys.stdin.buffer.read())
    answer: tuple[str, Any]
    try:
        answer = ("ok", parse_site(request["text"], request["source"]))
    except ConfigErrors as err:
        answer = ("errors", [(p.line, p.path, p.message) for p in err.problems])
    answer_to.write(_MAGIC + pickle.dumps(answer))
    answer_to.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
