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
agent.  Its answer is a pickled :class:`Site` (it is our own child: the
pickle is trusted) or the problems.  One validation runs at a time; a
second push meanwhile is answered at once instead of queueing CPU work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import sys
from typing import Any

from agent.config.limits import VALIDATE_TIMEOUT_S
from agent.config.load import ConfigErrors, Problem, Site, parse_site

__all__ = ["parse_site_bounded"]

log = logging.getLogger("agent.config")

_busy = False  # one child at a time (per process: the agent has one loop)


def _fail(source: str | None, message: str) -> ConfigErrors:
    return ConfigErrors([Problem(1, "", message)], source)


async def parse_site_bounded(text: str, source: str | None = None, *,
                             timeout: float = VALIDATE_TIMEOUT_S) -> Site:
    """:func:`parse_site` in a child process with a deadline.

    Raises :class:`ConfigErrors` for every way it can fail, including the
    deadline and a busy validator; cancelling the caller kills the child.
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
            out, err = await asyncio.wait_for(proc.communicate(request), timeout)
        except TimeoutError:
            log.warning("validation of a pushed config took over %g s: stopped", timeout)
            raise _fail(source, f"validation took longer than {timeout:g} s; "
                                "nothing was applied") from None
        try:
            answer = pickle.loads(out)
        except Exception:  # noqa: BLE001 - a child killed mid-write (OOM) leaves garbage
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
    request: dict[str, Any] = json.loads(sys.stdin.buffer.read())
    answer: tuple[str, Any]
    try:
        answer = ("ok", parse_site(request["text"], request["source"]))
    except ConfigErrors as err:
        answer = ("errors", [(p.line, p.path, p.message) for p in err.problems])
    sys.stdout.buffer.write(pickle.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
