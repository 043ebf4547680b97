"""Validate a site file in a forked child, so its transient peak never lands in the agent.

Validating a 10,000-tag file allocates ~50 MB of short-lived Python objects
(the YAML tree with positions, pydantic's intermediate values).  Freed, they
stay in the allocator's arenas: the agent kept ~41 MB it never used again,
while the validated :class:`Site` is ~9 MB of live objects.  Here the work
runs in a ``fork()`` of the agent (its imports and plugins are already there:
no start-up cost) and only the result comes back, pickled through a pipe
(~1.4 MB for 10,000 tags); the child's peak goes when it exits.

It is used for the site file at start-up and on SIGHUP (through
:meth:`ConfigStore.load_site`).  Where ``fork`` is missing or fails, or the
child gives no answer (killed, crashed, past ``DEADLINE_S``: a lock another
thread held at the fork could hang it), the same function runs in-process,
as before, so the answer is always the loader's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import pickle
import select
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent.config.site import ConfigErrors, Problem, Site

__all__ = ["DEADLINE_S", "off_process", "release_free_memory", "reuse_running"]

log = logging.getLogger("agent.config")

T = TypeVar("T")

#: How long the child may take before it is killed and the work is done
#: in-process (50,000 tags validate in ~3 s on this loaded 2-core machine).
DEADLINE_S = 120.0


def off_process(load: Callable[[], T]) -> T:
    """``load()`` run in a forked child; its result (or its ConfigErrors) returned here.

    Blocking: call it through ``asyncio.to_thread`` from the event loop.
    """
    if not hasattr(os, "fork"):
        return _in_process(load)
    try:
        read_fd, write_fd = os.pipe()
    except OSError:
        return _in_process(load)
    try:
        pid = os.fork()
    except OSError as err:
        os.close(read_fd)
        os.close(write_fd)
        log.warning("cannot fork to validate the config (%s); validating in-process", err)
        return _in_process(load)
    if pid == 0:  # pragma: no cover - the child (coverage does not follow it)
        os.close(read_fd)
        _child(load, write_fd)
    os.close(write_fd)
    data = _read_all(read_fd, pid)
    answer: Any = None
    if data:
        with contextlib.suppress(Exception):
            answer = pickle.loads(data)  # noqa: S301 - our own child, on our own pipe
    if isinstance(answer, tuple) and answer and answer[0] == "ok":
        result: T = answer[1]
        return result
    if isinstance(answer, tuple) and answer and answer[0] == "errors":
        raise ConfigErrors([Problem(*p) for p in answer[1]], answer[2])
    log.warning("config validator process gave no answer (%s); validating in-process",
                answer[1] if isinstance(answer, tuple) and len(answer) > 1 else "no data")
    return _in_process(load)


def _in_process(load: Callable[[], T]) -> T:
    try:
        return load()
    finally:
        release_free_memory()


def reuse_running(site: Site, running: Site | None) -> Site:
    """``site`` with each device that equals a running one replaced by the running object.

    A reload that changes one device restarts only that one; the others keep
    running with their old config objects.  Without this, the new site would
    hold equal copies of them for as long as it runs: a second copy of every
    unchanged tag (10,000 tags: ~7 MB), and the scheduler would compare them
    field by field again.
    """
    if running is None:
        return site
    old = {d.name: d for d in running.devices}
    devices = tuple(old[d.name] if old.get(d.name) == d else d for d in site.devices)
    if all(a is b for a, b in zip(devices, site.devices, strict=True)):
        return site
    return dataclasses.replace(site, devices=devices)


def _read_all(fd: int, pid: int) -> bytes:
    """Everything the child writes until it closes the pipe; reaps it. Kills it at the deadline."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while True:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                log.warning("config validator process still busy after %g s: killed", DEADLINE_S)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return b""
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _child(load: Callable[[], Any], fd: int) -> None:  # pragma: no cover - runs in the child
    code = 0
    try:
        # The agent's signal handling is not ours: a SIGTERM to the process
        # group ends this child, and must not reach the agent's loop through
        # an inherited wakeup fd.
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
        # Validation makes no cycles worth collecting, and a collection would
        # walk (and so copy) every page of the agent's heap.
        gc.disable()
        answer: tuple[Any, ...]
        try:
            answer = ("ok", load())
        except ConfigErrors as err:
            answer = ("errors", [(p.line, p.path, p.message) for p in err.problems], err.source)
        except BaseException as err:  # the parent redoes it and sees it raise
            answer = ("crash", f"{type(err).__name__}: {err}")
        view = memoryview(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        while view:
            view = view[os.write(fd, view):]
    except BaseException:  # no answer: the parent validates in-process
        code = 1
    finally:
        # Never the agent's teardown (atexit, buffers, its sqlite connection).
        os._exit(code)


_libc: Any = None


def release_free_memory() -> None:
    """Give the allocator's free pages back to the system (glibc's ``malloc_trim``).

    After an in-process validation, pymalloc has returned its empty arenas
    but glibc keeps the freed heap; trimming lowers RSS by what the peak
    left behind.  A no-op where there is no glibc.
    """
    global _libc
    if _libc is None:
        _libc = False
        import ctypes  # only here: ~1 MB an agent without a fallback never needs

        with contextlib.suppress(OSError, AttributeError):
            _libc = ctypes.CDLL(None).malloc_trim  # the process's own libc, no search
    if _libc:
        _libc(0)
