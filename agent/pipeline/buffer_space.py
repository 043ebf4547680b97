"""Room on disk for the buffer: the ``max_size`` bound and a full disk.

``buffer.max_size`` bounds everything the buffer keeps on disk: the database,
its write-ahead log (``-wal``) and the WAL index (``-shm``).  SQLite's files
get a fixed share of it and the batches the rest:

- ``-shm``: 32 KB (one WAL-index block, enough for 4,000 WAL frames; the
  WAL never holds that many, see below).
- ``-wal``: an eighth of ``max_size``, at least 128 KB and at most 4 MB.
  ``journal_size_limit`` trims the file back to that after each checkpoint,
  SQLite checkpoints once half of it is used, and one write transaction
  carries at most an eighth of it in batches, so the WAL never outgrows its
  share.  Keeping the file allocated (not truncated to zero) matters on a
  full disk: deletes still have somewhere to go.
- the database: the rest.  ``max_page_count`` makes SQLite refuse to grow it
  past that, so a bound can never be overshot, and the buffer drops the
  oldest batches *before* an insert that would not fit.

A full disk is the same problem with a smaller bound: the database may grow
only into what ``statvfs`` reports free, after the WAL's and the WAL index's
share are set aside.  Freed pages stay in the file and are reused, so once
some batches are dropped (or acknowledged) new ones fit again.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIN_SIZE", "SHM_BYTES", "Budget", "cap_pages", "dir_bytes", "files", "fs_bytes", "pages_for"]

SHM_BYTES = 32 * 1024
_WAL_MIN = 128 * 1024
_WAL_MAX = 4 * 1024**2
#: The smallest max_size that leaves the batches some room beside SQLite's files.
MIN_SIZE = 256 * 1024
# A WAL frame is a page plus a 24-byte header.
_FRAME_EXTRA = 24


@dataclass(frozen=True, slots=True)
class Budget:
    """How ``max_size`` splits between the database and SQLite's own files."""

    max_size: int
    page_size: int

    @property
    def wal_bytes(self) -> int:
        return min(_WAL_MAX, max(_WAL_MIN, self.max_size // 8))

    @property
    def txn_bytes(self) -> int:
        """Batch bytes one write transaction may carry (its WAL frames stay in the share)."""
        return self.wal_bytes // 8

    @property
    def autocheckpoint_pages(self) -> int:
        return max(4, self.wal_bytes // 2 // (self.page_size + _FRAME_EXTRA))

    @property
    def db_pages(self) -> int:
        return max(8, (self.max_size - SHM_BYTES - self.wal_bytes) // self.page_size)

    def configure(self, db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA journal_size_limit={self.wal_bytes}")
        db.execute(f"PRAGMA wal_autocheckpoint={self.autocheckpoint_pages}")

    def claim_wal(self, path: Path) -> bool:
        """Allocate the WAL's share on disk; False until the WAL exists and it worked.

        Done while there is room: SQLite rewrites the file from its start
        after each checkpoint, so every later transaction (an ack's delete
        above all) has its space even when something else has filled the
        disk.  Bytes past the last valid frame are ignored by SQLite (their
        checksums do not match).
        """
        try:
            fd = os.open(files(path)[1], os.O_RDWR)
        except OSError:
            return False  # SQLite creates the WAL with the first write
        try:
            if os.fstat(fd).st_size < self.wal_bytes:
                os.posix_fallocate(fd, 0, self.wal_bytes)
        except OSError:
            return False  # no room now: the WAL grows as it can
        finally:
            # Safe: SQLite keeps its POSIX locks on the database and -shm, never on -wal.
            os.close(fd)
        return True


def files(path: Path) -> list[Path]:
    """The database and the files SQLite keeps beside it."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def fs_bytes(directory: Path) -> int:
    """The size of the filesystem holding ``directory`` (huge when unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return 2**62
    return st.f_blocks * st.f_frsize


def dir_bytes(path: Path) -> int:
    """What the buffer occupies on disk now (database + WAL + WAL index)."""
    return sum(_size(p) for p in files(path))


def cap_pages(db: sqlite3.Connection, path: Path, budget: Budget) -> tuple[int, bool]:
    """Pages the database may hold now, and whether the disk (not ``max_size``) sets it."""
    page_count = int(db.execute("PRAGMA page_count").fetchone()[0])
    try:
        st = os.statvfs(path.parent)
        avail = st.f_bavail * st.f_frsize
    except OSError:
        return budget.db_pages, False
    _, wal, shm = files(path)
    # The WAL and its index must still be able to grow to their share.
    reserve = (max(0, budget.wal_bytes - _size(wal)) + max(0, SHM_BYTES - _size(shm))
               + 2 * budget.page_size)
    disk = page_count + max(0, avail - reserve) // budget.page_size
    if disk < budget.db_pages:
        return disk, True
    return budget.db_pages, False


def pages_for(sizes: Iterable[int], page_size: int) -> int:
    """Pages new rows of these payload sizes take, rounded up generously.

    A row costs its payload plus ~20 bytes of key, header and cell pointer;
    a payload past one page spills into overflow pages that hold
    ``page_size - 4`` bytes each.  Two pages more for the B-tree's edges.
    """
    total = sum(n + 24 for n in sizes)
    return -(-total // (page_size - 64)) + 2
