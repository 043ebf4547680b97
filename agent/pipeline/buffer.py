"""Store-and-forward: every sample is committed to SQLite before it is sent.

- One table of *batches*: all samples of one device collected during one
  commit window, encoded once as a JSON array of samples and split so that
  no message (envelope included) exceeds ``max_message``.  The batch's
  ``seq`` is the table's AUTOINCREMENT key, so it rises by one per batch and
  is never reused, even after rows are deleted or the process restarts.
- Group commit, WAL with ``synchronous=FULL``: a commit starts as soon as
  there is something to write and the previous commit started at least
  ``MIN_COMMIT_GAP`` (100 ms) ago, and never later than ``commit_interval``
  after it: readings reach the uplink within ~100 ms, and an SD card sees
  at most 10 fsyncs a second whatever the load (one per commit, not per
  reading).  A ``kill -9`` or power cut loses only what was still in
  memory: the readings of the last ~100 ms (or ``commit_interval``, if
  smaller) and those of a commit in progress.
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
import collections
import itertools
import math
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
# Group commit: commits start at least this far apart (flash wear: <= 10 fsyncs/s).
MIN_COMMIT_GAP = 0.1
# An idle writer still shows it lives this often (the watchdog's heartbeat).
_IDLE_BEAT = 5.0
# Batches just committed are also kept in memory (up to this many bytes), so
# the uplink sends them without reading them back through the worker thread,
# where the fetch would queue behind the next commit's fsync.
_RECENT_BYTES = 2 * 1024 * 1024


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
        #: Called after every commit; the systemd watchdog's view of the writer
        #: (a disk that hangs the commit stops it).
        self.heartbeat: Callable[[], None] = lambda: None
        self.commit_interval = commit_interval
        self.committed = asyncio.Event()  # set after each commit that added batches
        self._pending: dict[str, list[Sample]] = {}
        self._acked: list[int] = []
        self._holding = False
        self._work = asyncio.Event()  # set when there is something to commit
        self._recent: collections.deque[StoredBatch] = collections.deque()
        self._recent_bytes = 0
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
        if not samples:
            return
        pending = self._pending.setdefault(device, [])
        pending.extend(samples)
        self._work.set()
        if len(pending) > _PENDING_CAP:
            # Only reached when commits stall for a long time.
            excess = len(pending) - _PENDING_CAP
            del pending[:excess]
            self.stats.pending_dropped_samples += excess

    def ack(self, seq: int) -> None:
        """The broker has the batch: delete it with the next commit."""
        self._acked.append(seq)
        self._work.set()

    async def commit(self) -> int:
        """Delete what was acked, then write what is pending (and held)."""
        groups = [(d, s) for d, s in self._pending.items() if s]
        acked = self._acked
        if not groups and not acked and not self._holding:
            return 0
        self._pending = {}
        self._acked = []
        dropped_before = self.stats.dropped_batches
        added, left, self._holding, fresh = await self._call(self.store.write, groups, acked)
        self._acked[:0] = left
        self._remember(fresh, dropped_before)
        if added:
            self.committed.set()
        return int(added)

    def _remember(self, fresh: list[StoredBatch], dropped_before: int) -> None:
        """Keep what the last commit stored for the uplink's live fetch."""
        if self.stats.dropped_batches != dropped_before:
            # The limits deleted rows: only the database knows which are left.
            self._recent.clear()
            self._recent_bytes = 0
            return
        for batch in fresh:
            self._recent.append(batch)
            self._recent_bytes += len(batch.samples_json)
        while self._recent_bytes > _RECENT_BYTES:
            self._recent_bytes -= len(self._recent.popleft().samples_json)

    def _from_memory(self, after: int, limit: int) -> list[StoredBatch] | None:
        """Batches after ``after`` if memory has all of them, else None."""
        recent = self._recent
        while recent and recent[0].seq <= after:
            self._recent_bytes -= len(recent.popleft().samples_json)
        if not recent or recent[0].seq != after + 1:
            return None
        return list(itertools.islice(recent, limit))

    async def run(self) -> None:
        """Group commit until cancelled; commit once more on the way out.

        A commit starts when there is work and ``MIN_COMMIT_GAP`` (or
        ``commit_interval``, if smaller) has passed since the previous one
        started; a commit that takes longer than that is followed at once
        by the next, which takes everything that arrived meanwhile.
        """
        last = -math.inf
        try:
            while True:
                # Idle or just committed: the writer is not stuck (the systemd
                # watchdog's view); an idle buffer still beats every few seconds.
                self.heartbeat()
                try:
                    async with asyncio.timeout(_IDLE_BEAT):
                        await self._work.wait()
                except TimeoutError:
                    continue
                gap = min(MIN_COMMIT_GAP, self.commit_interval)
                await asyncio.sleep(max(0.0, last + gap - time.monotonic()))
                self._work.clear()
                last = time.monotonic()
                errors = self.stats.write_errors
                await self.commit()
                if self.stats.write_errors > errors or self._holding:
                    # The disk refused (full?): what was put back is retried
                    # once per commit_interval, not ten times a second.
                    self._work.set()
                    last += max(0.0, self.commit_interval - gap)
        finally:
            await asyncio.shield(self.commit())

    async def fetch(self, after: int, limit: int, upto: int | None = None) -> list[StoredBatch]:
        """Up to ``limit`` stored batches with ``after < seq <= upto``, oldest first.

        The live end (``upto`` None) comes from memory when the batches just
        committed cover it, else from the database.
        """
        if upto is None and (batches := self._from_memory(after, limit)) is not None:
            return batches
        return list(await self._call(self.store.fetch, after, upto, limit))

    async def restamp(self, fix: Callable[[int], int | None]) -> int:
        """Give samples flagged ``"clock": "unsynced"`` the time ``fix(ts)`` and drop
        the flag (None from ``fix``: leave the sample as it is); returns how many.

        Covers samples still in memory and stored batches alike; a batch in
        flight may still go out with its old times (it is flagged).
        """
        fixed = 0
        for samples in self._pending.values():
            for sample in samples:
                if sample.clock is not None and (new := fix(sample.ts)) is not None:
                    sample.ts = new
                    sample.clock = None
                    fixed += 1
        fixed += int(await self._call(self.store.restamp, fix))
        # The copies kept for the live fetch still have the old bytes: from
        # now on the uplink reads the re-stamped rows from the database.
        self._recent.clear()
        self._recent_bytes = 0
        return fixed

    async def max_seq(self) -> int:
        return int(await self._call(self.store.max_seq))

    async def close(self) -> None:
        await self.commit()
        await self._call(self.store.close)
        self._pool.shutdown(wait=True)
