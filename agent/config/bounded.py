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

Starting Python and importing the models takes ~0.5 s, so after each
validation a spare child is started, imports, and waits (at most
``SPARE_IDLE_S``, then it exits; it also exits when the agent does, on EOF):
the next push pays only for its own validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import select
import subprocess
import sys
from typing import Any

from agent.config.limits import VALIDATE_TIMEOUT_S
from agent.config.site import ConfigErrors, Problem, Site

__all__ = ["discard_spare", "parse_site_bounded"]

log = logging.getLogger("agent.config")

_busy = False  # one child at a time (per process: the agent has one loop)
#: A started child, its imports done, waiting for a request.
_spare: subprocess.Popen[bytes] | None = None
# A spare is a whole interpreter (~35 MB with the loader imports): worth keeping
# for a burst of pushes from an operator, not for hours on a small gateway.
SPARE_IDLE_S = 60.0
_MAGIC = b"edge-agent-validator/1\n"


def _spawn() -> subprocess.Popen[bytes]:
    # A plain Popen, not asyncio's: an asyncio child belongs to one loop and
    # complains when that loop closes before it (the idle spare would).
    return subprocess.Popen(  # noqa: S603 - our interpreter, our module, fixed argv
        [sys.executable, "-m", "agent.config.bounded", str(SPARE_IDLE_S)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)  # reaped at once after SIGKILL


def discard_spare() -> None:
    """Kill the waiting spare child, if any (it would exit on its own when
    idle or when the agent exits; tests count children)."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None:
        _kill(spare)


def _take_child() -> subprocess.Popen[bytes]:
    global _spare
    spare, _spare = _spare, None
    if spare is not None:
        if spare.poll() is None:
            return spare
        _kill(spare)  # exited while idle: reap it
    return _spawn()


def _exchange(proc: subprocess.Popen[bytes], request: bytes) -> tuple[bytes, bytes]:
    try:
        return proc.communicate(request)
    except (BrokenPipeError, ConnectionResetError):
        # Killed (deadline, stop) or the spare just went idle: no answer.
        _kill(proc)
        return b"", b""


def _fail(source: str | None, message: str) -> ConfigErrors:
    return ConfigErrors([Problem(1, "", message)], source)


async def parse_site_bounded(text: str, source: str | None = None, *,
                             limit_s: float = VALIDATE_TIMEOUT_S) -> Site:
    """:func:`parse_site` in a child process with a deadline.

    Raises :class:`ConfigErrors` for every way it can fail, including the
    deadline ``limit_s`` and a busy validator; cancelling the caller kills
    the child (which also ends the thread that talks to it).
    """
    global _busy, _spare
    if _busy:
        raise _fail(source, "another pushed config is being validated; retry when it is answered")
    _busy = True
    proc: subprocess.Popen[bytes] | None = None
    finished = False
    try:
        request = json.dumps({"text": text, "source": source}).encode()
        proc = _take_child()
        try:
            out, err = await asyncio.wait_for(asyncio.to_thread(_exchange, proc, request),
                                              limit_s)
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
        finished = True
        if answer[0] == "ok":
            site: Site = answer[1]
            return site
        raise ConfigErrors([Problem(*p) for p in answer[1]], source)
    finally:
        _busy = False
        if proc is not None and proc.poll() is None:
            # Deadline or cancellation (the agent stopping): never wait on it.
            _kill(proc)
        if finished:
            _spare = _spawn()


def _child(idle_s: float) -> int:
    answer_to = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else prints goes to stderr, never into the answer
    sys.stdout = sys.stderr
    # Imported here, not by the agent that only waits for this answer.
    from agent.config.load import parse_site
    from agent.config.plugins import load_plugins

    load_plugins()  # the slow part, done while we wait for work
    ready, _, _ = select.select([sys.stdin], [], [], idle_s)
    data = sys.stdin.buffer.read() if ready else b""
    if not data:
        return 0  # idle too long, or the agent is gone
    request: dict[str, Any] = json.loads(data)
    answer: tuple[str, Any]
    try:
        answer = ("ok", parse_site(request["text"], request["source"]))
    except ConfigErrors as err:
        answer = ("errors", [(p.line, p.path, p.message) for p in err.problems])
    answer_to.write(_MAGIC + pickle.dumps(answer))
    answer_to.close()
    # Skip the interpreter's teardown (0.3 s of freeing pydantic's models):
    # the agent waits for this exit.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(_child(float(sys.argv[1]) if len(sys.argv) > 1 else SPARE_IDLE_S))
