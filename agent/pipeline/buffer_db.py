"""The buffer's SQLite side: schema, transactions, room on disk, drops.

Everything here runs on the buffer's single worker thread (see ``buffer``).
The counters change only when a transaction has committed, so they stay
true whatever SQLite rolled back after an error such as SQLITE_FULL.
"""


from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.pipeline import buffer_space
from agent.pipeline.buffer_space import Budget
from agent.pipeline.encoders.json import JsonEncoder, pack_batches, split_events
from agent.sdk.readings import Sample, now_ms

__all__ = ["BufferDb", "BufferStats", "StoredBatch"]

log = logging.getLogger("agent.buffer")


# Encoded batches held in memory while nothing can be stored (a full disk).
_HOLD_BYTES = 16 * 1024**2
# How a stored sample taken with an unsynchronised clock is marked (see restamp).
_UNSYNCED = b'"clock":"unsynced"'
# Until the uplink says which gateway id it wraps batches with: room for a long one.
_DEFAULT_ENVELOPE = JsonEncoder("g" * 128).overhead

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
    samples_json: bytes  # a JSON array of samples


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
    held_dropped_samples: int = 0
    # Dropped by the limits while already on their way to the broker, and
    # acknowledged after all: counted in dropped_batches, yet not lost.
    # Batches lost = dropped_batches - dropped_delivered_batches (= the gaps).
    dropped_delivered_batches: int = 0
    write_errors: int = 0
    disk_bytes: int = 0

    def snapshot(self) -> dict[str, Any]:
        age = None if self.oldest_ms is None else round((now_ms() - self.oldest_ms) / 1000, 1)
        return {
            "depth": self.batches,
            "bytes": self.bytes,
            "disk_bytes": self.disk_bytes,
            "oldest_age_s": age,
            "committed_batches": self.committed_batches,
            "committed_samples": self.committed_samples,
            "dropped_batches": self.dropped_batches,
            "dropped_delivered_batches": self.dropped_delivered_batches,
            "dropped_samples": (self.dropped_samples + self.pending_dropped_samples
                                + self.held_dropped_samples),
            "write_errors": self.write_errors,
        }


@dataclass
class _Delta:
    """What one transaction changed; applied to the stats only once it committed."""

    batches: int = 0
    bytes: int = 0
    committed_batches: int = 0
    committed_samples: int = 0
    dropped_batches: int = 0
    dropped_samples: int = 0
    dropped_delivered: int = 0
    why: str = ""
    stored: list[StoredBatch] = field(default_factory=list)


def _is_full(err: sqlite3.Error) -> bool:
    return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(err)

class BufferDb:
    """All SQLite work of the buffer; runs on the buffer's one worker thread."""

    def __init__(self, path: Path, *, max_size: int, max_age: float, max_message: int) -> None:
        self.path = path
        self.max_size = max_size
        self.max_age = max_age
        self.max_message = max_message
        #: Envelope bytes a message adds around a batch of ``device`` (the uplink's encoder).
        self.envelope: Callable[[str], int] = _DEFAULT_ENVELOPE
        self.stats = BufferStats()
        self.db: sqlite3.Connection | None = None
        self._held: deque[tuple[str, bytes, int]] = deque()  # encoded, not yet stored
        self._held_bytes = 0
        self._budget = Budget(max_size, 4096)
        self._configured_for: int | None = None  # the max_size the pragmas were set for
        self._tight = False  # the disk, not max_size, bounds the database now
        self._refusing: str | None = None  # the error of a failing episode
        self._dropping: str | None = None  # why batches are being dropped (once per episode)
        self._dropped_now = False
        self._can_shrink = True
        self._wal_claimed = False  # the WAL's share allocated on disk
        self._fresh: list[StoredBatch] = []  # stored by this write, for the uplink's live end

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # Before the first table: lets a lowered max_size shrink the file.
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # Debian's SQLite overwrites every freed page (secure_delete=ON): each
        # delete would write as much as it frees, twice the SD-card wear, and
        # on a full disk a delete could not get the WAL room to free anything.
        db.execute("PRAGMA secure_delete=FAST")
        db.executescript(_SCHEMA)
        self.db = db
        # A file made before this setting existed cannot shrink (VACUUM would
        # need its size again on disk): it keeps its size, and never grows.
        self._can_shrink = db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        self._sync_budget(db)
        # A WAL left by a crash or an older version (no size limit) starts
        # over; journal_size_limit trims it with the next write.
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(RESTART)")
        self._wal_claimed = self._budget.claim_wal(self.path)
        self._recount(db)

    def _sync_budget(self, db: sqlite3.Connection) -> None:
        if self._configured_for != self.max_size:
            self._configured_for = self.max_size
            page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
            # On a filesystem smaller than max_size, SQLite's share is sized
            # from the filesystem, or the WAL alone could claim all of it.
            size = min(self.max_size, buffer_space.fs_bytes(self.path.parent))
            self._budget = Budget(size, page_size)
            self._budget.configure(db)
            self._wal_claimed = False

    def _txn(self, db: sqlite3.Connection, body: Callable[[_Delta], None]) -> _Delta:
        """Run ``body`` in one write transaction; the stats change only if it commits."""
        if db.in_transaction:  # left open by a failed COMMIT
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        delta = _Delta()
        db.execute("BEGIN IMMEDIATE")
        try:
            body(delta)
            db.execute("COMMIT")
        except BaseException:
            # After SQLITE_FULL SQLite may already have rolled back: a ROLLBACK
            # then fails, and must not hide the real error.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        st = self.stats
        st.batches += delta.batches
        st.bytes += delta.bytes
        st.committed_batches += delta.committed_batches
        st.committed_samples += delta.committed_samples
        st.dropped_batches += delta.dropped_batches
        st.dropped_samples += delta.dropped_samples
        st.dropped_delivered_batches += delta.dropped_delivered
        self._fresh.extend(delta.stored)
        self._refresh_oldest(db)
        if delta.dropped_batches:
            self._dropped_now = True
            if self._dropping is None:
                self._dropping = delta.why
                log.warning("buffer: %s: dropping the oldest batches; every drop is counted "
                            "in the metrics", delta.why)
            log.debug("buffer dropped %d oldest batches (%d samples)", delta.dropped_batches,
                      delta.dropped_samples)
        return delta

    def write(self, groups: list[tuple[str, list[Sample]]],
              acked: list[int]) -> tuple[int, list[int], bool, list[StoredBatch]]:
        """Store what is held and delete what was acked.

        Returns (batches added, acked seqs still to delete, readings still
        held, the batches stored).
        """
        self._fresh = []
        assert self.db is not None
        db = self.db
        self._sync_budget(db)
        for device, samples in groups:
            limit = self.max_message - self.envelope(device)
            for payload, count in pack_batches(samples, limit):
                self._held.append((device, payload, count))
                self._held_bytes += len(payload)
        self._bound_held()
        error: sqlite3.Error | None = None
        freed = False
        if acked:
            try:
                freed = self._delete_acked(db, acked)
                acked = []
            except sqlite3.Error as err:  # retried with the next commit
                error = err
        self._dropped_now = False
        added = 0
        try:
            added = self._store_held(db)
        except sqlite3.Error as err:
            error = err
        with contextlib.suppress(sqlite3.Error):
            self._shrink(db)
        if self._tight:
            # Little room left on the disk: move the WAL into the database now,
            # while the database can still grow, so the next transaction
            # rewrites the WAL file from its start instead of growing it.
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(RESTART)")
        if error is not None:
            self.stats.write_errors += 1
            with contextlib.suppress(sqlite3.Error):
                self._recount(db)
            if self._refusing is None:
                self._refusing = str(error)
                log.error("buffer: cannot write to %s: %s; the oldest batches make room where "
                          "they can, the newest readings wait in memory (up to %d MB)",
                          self.path, error, _HOLD_BYTES // 1024**2)
        elif self._refusing is not None:
            self._refusing = None
            log.info("buffer: writes to %s work again", self.path)
        # The episode ends when the uplink frees room, not on the first commit
        # that happened to fit (drops make a little more room than asked).
        if self._dropping is not None and freed and not self._dropped_now:
            log.info("buffer no longer dropping (%s); %d batches (%d samples) dropped since "
                     "start", self._dropping, self.stats.dropped_batches,
                     self.stats.dropped_samples)
            self._dropping = None
        if not self._wal_claimed:
            self._wal_claimed = self._budget.claim_wal(self.path)
        self.stats.disk_bytes = buffer_space.dir_bytes(self.path)
        fresh, self._fresh = self._fresh, []
        return added, acked, bool(self._held), fresh

    def _delete_acked(self, db: sqlite3.Connection, acked: list[int]) -> bool:
        """Delete acked batches in a transaction of their own; True if any were there.

        Without an fsync of its own: a delete lost to a power cut only means
        a batch the broker has is sent again (delivery is at least once), and
        the next insert's fsync makes it durable anyway.  So a commit window
        still costs one fsync.
        """
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._txn(db, lambda d: self._delete(db, acked, d)).batches < 0
        except sqlite3.Error as err:
            if not _is_full(err):
                raise
            # The WAL could not grow: checkpoint so it starts over in the space it has.
            db.execute("PRAGMA wal_checkpoint(RESTART)")
            return self._txn(db, lambda d: self._delete(db, acked, d)).batches < 0
        finally:
            db.execute("PRAGMA synchronous=FULL")

    def _shrink(self, db: sqlite3.Connection) -> None:
        """After max_size was lowered: give the pages freed beyond it back to the disk."""
        page_count, free = self._pages(db)
        over = page_count - self._budget.db_pages
        if over <= 0 or not free or not self._can_shrink:
            return
        # Each step of the statement frees one page, and execute() steps only
        # once: executescript() runs it to the end.
        db.executescript(f"PRAGMA incremental_vacuum({min(over, free)});")
        # The moved pages went through the WAL: fold it in, then claim its share again.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._wal_claimed = False
        log.info("buffer: file shrunk by %d pages to the new max_size", min(over, free))

    def _bound_held(self) -> None:
        while self._held_bytes > _HOLD_BYTES and len(self._held) > 1:
            _, payload, count = self._held.popleft()
            self._held_bytes -= len(payload)
            self.stats.held_dropped_samples += count

    def _store_held(self, db: sqlite3.Connection) -> int:
        added = 0
        while self._held:
            chunk: list[tuple[str, bytes, int]] = []
            size = 0
            for item in self._held:
                if chunk and size + len(item[1]) > self._budget.txn_bytes:
                    break
                chunk.append(item)
                size += len(item[1])
            self._insert_making_room(db, chunk, size)
            for _ in chunk:
                self._held.popleft()
            self._held_bytes -= size
            added += len(chunk)
        return added

    def _insert_making_room(self, db: sqlite3.Connection,
                            chunk: list[tuple[str, bytes, int]], size: int) -> None:
        for attempt in range(3):
            try:
                self._txn(db, lambda d: self._insert(db, chunk, d))
                return
            except sqlite3.Error as err:
                if not _is_full(err) or attempt == 2:
                    raise
                # Less room than measured (someone else filled the disk, or the
                # WAL had to grow): checkpoint, drop more, in a transaction of
                # its own, and try again.  Nothing left to drop: give up.
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                need = (size + 4 * self._budget.page_size) * (attempt + 1)

                def drop(d: _Delta, need: int = need) -> None:
                    self._drop_bytes(db, need, d, "disk full")

                if not self._txn(db, drop).dropped_batches:
                    raise

    def _insert(self, db: sqlite3.Connection, chunk: list[tuple[str, bytes, int]],
                d: _Delta) -> None:
        now = now_ms()
        budget = self._budget
        cap, disk = buffer_space.cap_pages(db, self.path, budget)
        self._tight = disk
        # SQLite itself refuses to grow the file past the bound.
        db.execute(f"PRAGMA max_page_count={cap}")
        self._drop_aged(db, now, d)
        need = buffer_space.pages_for((len(p) for _, p, _ in chunk), budget.page_size)
        why = f"disk full at {self.path.parent}" if disk else \
            f"buffer full (max_size {self.max_size} bytes for database, WAL and index)"
        for _ in range(64):
            page_count, free = self._pages(db)
            room = cap - (page_count - free)
            if room >= need:
                break
            if not self._drop_bytes(db, (need - room) * budget.page_size, d, why):
                break
        for device, payload, count in chunk:
            cur = db.execute(
                "INSERT INTO batches(device, created_ms, samples, payload) VALUES (?,?,?,?)",
                (device, now, count, payload),
            )
            assert cur.lastrowid is not None
            d.stored.append(StoredBatch(cur.lastrowid, device, now, payload))
            d.batches += 1
            d.bytes += len(payload)
            d.committed_batches += 1
            d.committed_samples += count

    @staticmethod
    def _pages(db: sqlite3.Connection) -> tuple[int, int]:
        return (int(db.execute("PRAGMA page_count").fetchone()[0]),
                int(db.execute("PRAGMA freelist_count").fetchone()[0]))

    def _drop_bytes(self, db: sqlite3.Connection, nbytes: int, d: _Delta, why: str) -> int:
        """Drop the oldest batches holding at least ``nbytes``; returns how many."""
        freed, last = 0, None
        while freed < nbytes:
            rows = db.execute("SELECT seq, LENGTH(payload) FROM batches WHERE seq > ? "
                              "ORDER BY seq LIMIT 256", (last or 0,)).fetchall()
            if not rows:
                break
            for seq, size in rows:
                freed += size + 24
                last = seq
                if freed >= nbytes:
                    break
        if last is None:
            return 0
        return self._drop_upto(db, last, d, why)

    def _drop_aged(self, db: sqlite3.Connection, now: int, d: _Delta) -> None:
        cutoff = now - int(self.max_age * 1000)
        first = db.execute("SELECT created_ms FROM batches ORDER BY seq LIMIT 1").fetchone()
        if first is None or first[0] >= cutoff:
            return
        # Batches are stored in time order: walk from the oldest to the first young one.
        young = db.execute("SELECT seq FROM batches WHERE created_ms >= ? ORDER BY seq LIMIT 1",
                           (cutoff,)).fetchone()
        last = young[0] - 1 if young else db.execute("SELECT MAX(seq) FROM batches").fetchone()[0]
        self._drop_upto(db, last, d, f"batches older than max_age {self.max_age:.0f} s")

    def _drop_upto(self, db: sqlite3.Connection, last: int, d: _Delta, why: str) -> int:
        row = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(samples),0), COALESCE(SUM(LENGTH(payload)),0) "
            "FROM batches WHERE seq <= ?", (last,)).fetchone()
        if not row[0]:
            return 0
        db.execute("DELETE FROM batches WHERE seq <= ?", (last,))
        d.batches -= row[0]
        d.bytes -= row[2]
        d.dropped_batches += row[0]
        d.dropped_samples += row[1]
        d.why = d.why or why
        return int(row[0])

    def _delete(self, db: sqlite3.Connection, seqs: list[int], d: _Delta) -> None:
        for i in range(0, len(seqs), 500):
            chunk = seqs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            row = db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0) FROM batches "  # noqa: S608
                f"WHERE seq IN ({marks})",
                chunk,
            ).fetchone()
            db.execute(f"DELETE FROM batches WHERE seq IN ({marks})", chunk)  # noqa: S608
            d.batches -= row[0]
            d.bytes -= row[1]
            # An acked seq with no row was dropped by the limits while in flight.
            d.dropped_delivered += len(set(chunk)) - row[0]

    def _refresh_oldest(self, db: sqlite3.Connection) -> None:
        # The first row by seq (the primary key): no scan of created_ms, which
        # has no index, on the thread that also serves the uplink.
        row = db.execute("SELECT created_ms FROM batches ORDER BY seq LIMIT 1").fetchone()
        self.stats.oldest_ms = row[0] if row else None

    def _recount(self, db: sqlite3.Connection) -> None:
        row = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0) FROM batches"
        ).fetchone()
        self.stats.batches, self.stats.bytes = row
        self._refresh_oldest(db)
        self.stats.disk_bytes = buffer_space.dir_bytes(self.path)

    def fetch(self, after: int, upto: int | None, limit: int) -> list[StoredBatch]:
        assert self.db is not None
        sql = "SELECT seq, device, created_ms, payload FROM batches WHERE seq > ?"
        args: tuple[Any, ...] = (after,)
        if upto is not None:
            sql += " AND seq <= ?"
            args = (after, upto)
        rows = self.db.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
        return [StoredBatch(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def restamp(self, fix: Callable[[int], int | None]) -> int:
        """Re-stamp stored samples flagged ``"clock": "unsynced"`` (see Buffer.restamp)."""
        assert self.db is not None
        db = self.db
        fixed = 0

        def body(d: _Delta) -> None:
            nonlocal fixed
            rows = db.execute("SELECT seq, payload FROM batches WHERE instr(payload, ?) > 0",
                              (_UNSYNCED,)).fetchall()
            for seq, payload in rows:
                samples_part, events_part = split_events(payload)
                samples = json.loads(samples_part)
                count = 0
                for obj in samples:
                    new = fix(obj["ts"]) if obj.get("clock") is not None else None
                    if new is not None:
                        obj["ts"] = new
                        del obj["clock"]
                        count += 1
                if count:
                    # Never longer than before (the flag goes, ts keeps its
                    # digits), so the batch still fits max_message.
                    data = json.dumps(samples, separators=(",", ":")).encode()
                    if events_part is not None:
                        data += b',"events":' + events_part
                    db.execute("UPDATE batches SET payload = ? WHERE seq = ?", (data, seq))
                    d.bytes += len(data) - len(payload)
                    fixed += count

        self._txn(db, body)
        return fixed

    def max_seq(self) -> int:
        assert self.db is not None
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._held:
            log.error("buffer: %d readings held in memory could not be stored",
                      sum(c for _, _, c in self._held))
        if self.db is not None:
            self.db.close()
            self.db = None
