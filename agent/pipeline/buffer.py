"""Store-and-forward: every sample is committed to SQLite before it is sent.

- One table of *batches*: all samples of one device collected during one
  commit window, encoded once as a JSON array of samples and split so that
  no message exceeds ``max_message``.  The batch's ``seq`` is the table's
  AUTOINCREMENT key, so it rises by one per batch and is never reused, even
  after rows are deleted or the process restarts.
- Group commit, WAL with ``synchronous=FULL``: a commit starts as soon as
  there is something to write and the previous commit started at least
  ``MIN_COMMIT_GAP`` (100 ms) ago, and never later than ``commit_interval``
  after it: readings reach the uplink within ~100 ms, and an SD card sees
  at most 10 fsyncs a second whatever the load (one per commit, not per
  reading).  A ``kill -9`` or power cut loses only what was still in
  memory: the readings of the last ~100 ms (or ``commit_interval``, if
  smaller) and those of a commit in progress.
- Rows are deleted only when the uplink reports the broker's PUBACK.
- Bounded by size and age; beyond them the oldest batches go first, and
  every drop is counted.
- All SQLite work runs on one worker thread so a slow fsync never stalls
  the event loop (polls stay on time).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.sdk.readings import NOT_FINITE, Sample, now_ms

__all__ = ["Buffer", "BufferStats", "StoredBatch", "split_events"]

log = logging.getLogger("agent.buffer")
T = TypeVar("T")

# Room for {"gateway":..,"device":..,"seq":<20 digits>,"samples":} around a batch.
_ENVELOPE_BYTES = 96
# Group commit: commits start at least this far apart (flash wear: <= 10 fsyncs/s).
MIN_COMMIT_GAP = 0.1
# An idle writer still shows it lives this often (the watchdog's heartbeat).
_IDLE_BEAT = 5.0
# Batches just committed are also kept in memory (up to this many bytes), so
# the uplink sends them without reading them back through the worker thread,
# where the fetch would queue behind the next commit's fsync.
_RECENT_BYTES = 2 * 1024 * 1024
_EVENTS_MARK = b'],"events":['
# Samples held in memory while the disk refuses writes, per device.
_PENDING_CAP = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    payload BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StoredBatch:
    seq: int
    device: str
    created_ms: int
    # A JSON array of samples, followed by ``,"events":[...]`` when the
    # batch carries alarm events: the uplink writes it after ``"samples":``
    # so the events land at the message level.  See split_events().
    samples_json: bytes


def split_events(payload: bytes) -> tuple[bytes, bytes | None]:
    """A stored payload as (samples array, events array or None)."""
    # Keys inside samples are quoted tag names, and a string can never hold
    # an unescaped quote, so the marker is only ever the events suffix
    # (rfind: a tag named "events" holding a list comes earlier).
    at = payload.rfind(_EVENTS_MARK)
    if at < 0 or not payload.endswith(b"]"):
        return payload, None
    return payload[: at + 1], payload[at + len(_EVENTS_MARK) - 1 :]


@dataclass
class BufferStats:
    batches: int = 0
    bytes: int = 0
    oldest_ms: int | None = None
    committed_batches: int = 0
    committed_samples: int = 0
    dropped_batches: int = 0
    dropped_samples: int = 0
    pending_dropped_samples: int = 0
    write_errors: int = 0

    def snapshot(self) -> dict[str, Any]:
        age = None if self.oldest_ms is None else round((now_ms() - self.oldest_ms) / 1000, 1)
        return {
            "depth": self.batches,
            "bytes": self.bytes,
            "oldest_age_s": age,
            "committed_batches": self.committed_batches,
            "committed_samples": self.committed_samples,
            "dropped_batches": self.dropped_batches,
            "dropped_samples": self.dropped_samples + self.pending_dropped_samples,
            "write_errors": self.write_errors,
        }


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def encode_sample(sample: Sample) -> bytes:
    """One sample as compact JSON; a non-finite number becomes a bad reading."""
    obj = sample.to_json_obj()
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        values = dict(sample.values)
        bad = dict(sample.bad)
        for tag, value in sample.values.items():
            if not _finite(value):
                values[tag] = None
                bad[tag] = NOT_FINITE
        fixed = Sample(sample.ts, values, bad, sample.uncertain)
        return json.dumps(fixed.to_json_obj(), separators=(",", ":"), default=str).encode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), default=str).encode()


def _split_sample(sample: Sample, limit: int) -> list[bytes]:
    """A sample too large for one message, as several with the same ts."""
    parts: list[bytes] = []
    tags = list(sample.values)
    chunk = max(1, len(tags) // 2)
    start = 0
    while start < len(tags):
        names = tags[start : start + chunk]
        piece = Sample(
            sample.ts,
            {t: sample.values[t] for t in names},
            {t: sample.bad[t] for t in names if t in sample.bad},
            {t: sample.uncertain[t] for t in names if t in sample.uncertain},
        )
        encoded = encode_sample(piece)
        if len(encoded) > limit and chunk > 1:
            chunk //= 2
            continue
        parts.append(encoded)
        start += len(names)
    return parts


def pack_batches(samples: list[Sample], limit: int) -> list[tuple[bytes, int]]:
    """Encode samples into JSON arrays of at most ``limit`` bytes each.

    Returns (array, sample count) pairs, in order.
    """
    out: list[tuple[bytes, int]] = []
    current: list[bytes] = []
    events: list[bytes] = []
    size = 2

    def close() -> None:
        body = b"[" + b",".join(current) + b"]"
        if events:
            body += b',"events":[' + b",".join(events) + b"]"
        out.append((body, len(current)))

    for sample in samples:
        encoded = encode_sample(sample)
        pieces = [encoded] if len(encoded) + 2 <= limit else _split_sample(sample, limit - 2)
        # A sample's events go in the message holding its (first) piece.
        extra = [_encode_event(e) for e in sample.events]
        for piece in pieces:
            grow = len(piece) + 1 + sum(len(e) + 1 for e in extra) + (12 if extra else 0)
            if current and size + grow > limit:
                close()
                current, events, size = [], [], 2
            current.append(piece)
            events.extend(extra)
            size += grow
            extra = []
    if current:
        close()
    return out


def _encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), default=str).encode()


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
        self.path = path
        #: Called after every commit; the systemd watchdog's view of the writer
        #: (a disk that hangs the commit stops it).
        self.heartbeat: Callable[[], None] = lambda: None
        self.max_size = max_size
        self.max_age = max_age
        self.set_max_message(max_message)
        self.commit_interval = commit_interval
        self.stats = BufferStats()
        self.committed = asyncio.Event()  # set after each commit that added batches
        self._pending: dict[str, list[Sample]] = {}
        self._acked: list[int] = []
        self._work = asyncio.Event()  # set when there is something to commit
        self._recent: collections.deque[StoredBatch] = collections.deque()
        self._recent_bytes = 0
        self._fresh: list[StoredBatch] = []  # filled by _write, taken by commit
        self._db: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")
        self._disk_full_logged = False
        self._dropping = False
        self._dropped_now = False

    def set_max_message(self, max_message: int) -> None:
        """Batches committed from now on fit ``max_message`` (stored ones already do)."""
        self.batch_limit = max_message - _ENVELOPE_BYTES

    # -- thread side ---------------------------------------------------
    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        row = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0), MIN(created_ms) FROM batches"
        ).fetchone()
        self.stats.batches, self.stats.bytes, self.stats.oldest_ms = row
        self._db = db

    def _write(self, groups: list[tuple[str, list[Sample]]], acked: list[int]) -> int:
        assert self._db is not None
        db = self._db
        added = 0
        now = now_ms()
        db.execute("BEGIN IMMEDIATE")
        try:
            if acked:
                self._delete(db, acked)
            for device, samples in groups:
                for payload, count in pack_batches(samples, self.batch_limit):
                    cur = db.execute(
                        "INSERT INTO batches(device, created_ms, samples, payload) VALUES (?,?,?,?)",
                        (device, now, count, payload),
                    )
                    assert cur.lastrowid is not None
                    self._fresh.append(StoredBatch(cur.lastrowid, device, now, payload))
                    self.stats.batches += 1
                    self.stats.bytes += len(payload)
                    self.stats.committed_batches += 1
                    self.stats.committed_samples += count
                    added += 1
            if self.stats.oldest_ms is None and self.stats.batches:
                self.stats.oldest_ms = now
            self._dropped_now = False
            self._enforce_limits(db, now)
            db.execute("COMMIT")
            if self._dropping and not self._dropped_now:
                self._dropping = False
                log.info("buffer no longer dropping; %d batches (%d samples) dropped since start",
                         self.stats.dropped_batches, self.stats.dropped_samples)
        except BaseException:
            self._fresh = []
            db.execute("ROLLBACK")
            self._recount(db)
            raise
        return added

    def _delete(self, db: sqlite3.Connection, seqs: list[int]) -> None:
        for i in range(0, len(seqs), 500):
            chunk = seqs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            row = db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0) FROM batches "  # noqa: S608
                f"WHERE seq IN ({marks})",
                chunk,
            ).fetchone()
            db.execute(f"DELETE FROM batches WHERE seq IN ({marks})", chunk)  # noqa: S608
            self.stats.batches -= row[0]
            self.stats.bytes -= row[1]
        self._refresh_oldest(db)

    def _refresh_oldest(self, db: sqlite3.Connection) -> None:
        self.stats.oldest_ms = db.execute("SELECT MIN(created_ms) FROM batches").fetchone()[0]

    def _recount(self, db: sqlite3.Connection) -> None:
        row = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0), MIN(created_ms) FROM batches"
        ).fetchone()
        self.stats.batches, self.stats.bytes, self.stats.oldest_ms = row

    def _drop_oldest(self, db: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> None:
        row = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(samples),0), COALESCE(SUM(LENGTH(payload)),0) "  # noqa: S608
            f"FROM batches WHERE {where}",
            args,
        ).fetchone()
        if not row[0]:
            return
        db.execute(f"DELETE FROM batches WHERE {where}", args)  # noqa: S608
        self.stats.batches -= row[0]
        self.stats.bytes -= row[2]
        self.stats.dropped_batches += row[0]
        self.stats.dropped_samples += row[1]
        self._dropped_now = True
        # Once per episode: a full buffer drops on every commit until the uplink returns.
        if not self._dropping:
            log.warning("buffer full (limits %d bytes, %.0f s): dropping the oldest batches; "
                        "every drop is counted in the metrics", self.max_size, self.max_age)
            self._dropping = True
        log.debug("buffer dropped %d oldest batches (%d samples)", row[0], row[1])

    def _enforce_limits(self, db: sqlite3.Connection, now: int) -> None:
        cutoff = now - int(self.max_age * 1000)
        if self.stats.oldest_ms is not None and self.stats.oldest_ms < cutoff:
            self._drop_oldest(db, "created_ms < ?", (cutoff,))
        if self.stats.bytes > self.max_size:
            # Walk from the oldest until enough bytes are freed.
            excess = self.stats.bytes - self.max_size
            freed, last = 0, None
            for seq, size in db.execute("SELECT seq, LENGTH(payload) FROM batches ORDER BY seq"):
                freed += size
                last = seq
                if freed >= excess:
                    break
            if last is not None:
                self._drop_oldest(db, "seq <= ?", (last,))
        self._refresh_oldest(db)

    def _fetch(self, after: int, upto: int | None, limit: int) -> list[StoredBatch]:
        assert self._db is not None
        sql = "SELECT seq, device, created_ms, payload FROM batches WHERE seq > ?"
        args: tuple[Any, ...] = (after,)
        if upto is not None:
            sql += " AND seq <= ?"
            args = (after, upto)
        rows = self._db.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
        return [StoredBatch(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def _max_seq(self) -> int:
        assert self._db is not None
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
        return int(row[0]) if row else 0

    # -- loop side -----------------------------------------------------
    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        await self._call(self._open)
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
            # Only reached when the disk has refused writes for a long time.
            excess = len(pending) - _PENDING_CAP
            del pending[:excess]
            self.stats.pending_dropped_samples += excess

    def ack(self, seq: int) -> None:
        """The broker has the batch: delete it with the next commit."""
        self._acked.append(seq)
        self._work.set()

    async def commit(self) -> int:
        """Write what is pending and delete what was acked, in one transaction."""
        groups = [(d, s) for d, s in self._pending.items() if s]
        acked = self._acked
        if not groups and not acked:
            return 0
        self._pending = {}
        self._acked = []
        dropped_before = self.stats.dropped_batches
        try:
            added = int(await self._call(self._write, groups, acked))
        except sqlite3.Error as err:
            self.stats.write_errors += 1
            # Put everything back: nothing that was handed to us is lost while
            # the disk is full; add() caps memory meanwhile.
            for device, samples in groups:
                self._pending.setdefault(device, [])[:0] = samples
            self._acked[:0] = acked
            if not self._disk_full_logged:
                log.error("buffer: cannot commit to %s: %s; keeping readings in memory",
                          self.path, err)
                self._disk_full_logged = True
            return 0
        if self._disk_full_logged:
            log.info("buffer: commits to %s work again", self.path)
            self._disk_full_logged = False
        self._remember(dropped_before)
        if added:
            self.committed.set()
        return added

    def _remember(self, dropped_before: int) -> None:
        """Keep what the last commit stored for the uplink's live fetch."""
        fresh, self._fresh = self._fresh, []
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
                if self.stats.write_errors > errors:
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
        return list(await self._call(self._fetch, after, upto, limit))

    async def max_seq(self) -> int:
        return int(await self._call(self._max_seq))

    async def close(self) -> None:
        await self.commit()

        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._call(_close)
        self._pool.shutdown(wait=True)
