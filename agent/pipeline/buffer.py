"""Store-and-forward: every sample is committed to SQLite before it is sent.

- One table of *batches*: all samples of one device collected during one
  commit window, encoded once as a JSON array of samples and split so that
  no message (envelope included) exceeds ``max_message``.  The batch's
  ``seq`` is the table's AUTOINCREMENT key, so it rises by one per batch and
  is never reused, even after rows are deleted or the process restarts.
- WAL with ``synchronous=FULL``: one fsync per commit window, not per
  reading (SD cards wear out).  A ``kill -9`` or power cut loses only what
  was still in memory: at most one commit window.
- Rows are deleted only when the uplink reports the broker's PUBACK, in a
  transaction of their own: freeing room never waits on an insert.
- Bounded by size (the whole directory, see ``buffer_space``) and age;
  beyond them, or when the disk is full, the oldest batches go first, and
  every drop is counted.  When nothing can be stored at all the newest
  readings wait in memory (bounded) and are stored as soon as there is room.
- The counters change only when a transaction has committed, so they stay
  true whatever SQLite rolled back.
- All SQLite work runs on one worker thread so a slow fsync never stalls
  the event loop (polls stay on time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent.pipeline.buffer_db import BufferDb, BufferStats, StoredBatch, log
from agent.pipeline.encoders.json import encode_sample, pack_batches
from agent.sdk.readings import Sample

__all__ = ["Buffer", "BufferStats", "StoredBatch", "encode_sample", "pack_batches"]

# Samples waiting for the next commit, per device (reached only when commits stall).
_PENDING_CAP = 10_000


class Buffer:
    """The durable queue between the scheduler and the uplink."""

    def __init__(
        self,
        path: Path,
        *,
        max_size: int,
        max_age: float,
        max_message: int,
        commit_interval: float,
    ) -> None:
        self.store = BufferDb(path, max_size=max_size, max_age=max_age, max_message=max_message)
        self.commit_interval = commit_interval
        self.committed = asyncio.Event()  # set after each commit that added batches
        self._pending: dict[str, list[Sample]] = {}
        self._acked: list[int] = []
        self._holding = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")

    # Settings live on the thread side, which reads them at each commit.
    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def stats(self) -> BufferStats:
        return self.store.stats

    @property
    def max_size(self) -> int:
        return self.store.max_size

    @max_size.setter
    def max_size(self, value: int) -> None:
        self.store.max_size = value

    @property
    def max_age(self) -> float:
        return self.store.max_age

    @max_age.setter
    def max_age(self, value: float) -> None:
        self.store.max_age = value

    @property
    def envelope(self) -> Callable[[str], int]:
        return self.store.envelope

    @envelope.setter
    def envelope(self, value: Callable[[str], int]) -> None:
        self.store.envelope = value

    def set_max_message(self, max_message: int) -> None:
        """Batches committed from now on fit ``max_message`` (stored ones already do)."""
        self.store.max_message = max_message

    # -- loop side -----------------------------------------------------
    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        await self._call(self.store.open)
        log.info("buffer %s: %d batches waiting (%d bytes)", self.path, self.stats.batches,
                 self.stats.bytes)

    def add(self, device: str, samples: list[Sample]) -> None:
        """Queue samples for the next commit; never blocks, never fails."""
        pending = self._pending.setdefault(device, [])
        pending.extend(samples)
        if len(pending) > _PENDING_CAP:
            # Only reached when commits stall for a long time.
            excess = len(pending) - _PENDING_CAP
            del pending[:excess]
            self.stats.pending_dropped_samples += excess

    def ack(self, seq: int) -> None:
        """The broker has the batch: delete it with the next commit."""
        self._acked.append(seq)

    async def commit(self) -> int:
        """Delete what was acked, then write what is pending (and held)."""
        groups = [(d, s) for d, s in self._pending.items() if s]
        acked = self._acked
        if not groups and not acked and not self._holding:
            return 0
        self._pending = {}
        self._acked = []
        added, left, self._holding = await self._call(self.store.write, groups, acked)
        self._acked[:0] = left
        if added:
            self.committed.set()
        return int(added)

    async def run(self) -> None:
        """Commit every ``commit_interval`` until cancelled; commit once more on the way out."""
        try:
            while True:
                started = time.monotonic()
                await self.commit()
                await asyncio.sleep(max(0.0, self.commit_interval - (time.monotonic() - started)))
        finally:
            await asyncio.shield(self.commit())

    async def fetch(self, after: int, limit: int, upto: int | None = None) -> list[StoredBatch]:
        """Up to ``limit`` stored batches with ``after < seq <= upto``, oldest first."""
        return list(await self._call(self.store.fetch, after, upto, limit))

    async def max_seq(self) -> int:
        return int(await self._call(self.store.max_seq))

    async def close(self) -> None:
        await self.commit()
        await self._call(self.store.close)
        self._pool.shutdown(wait=True)
