"""Between "store a blob, then commit the row that references it" and retention's "find a blob unreferenced, then
delete it": without an order, retention can delete a blob whose row is about to commit.

One process (the embedded node) orders them with a lock of its own. Processes sharing a bucket and a PostgreSQL
database order them per blob with PostgreSQL advisory locks: a writer holds a shared lock on each hash it stores
until its row has committed; retention deletes only the blobs whose lock it can take exclusively (without waiting;
a blob being written is left for the next sweep), inside the transaction in which it found them unreferenced.
Writers of different blobs never wait for each other. A writer holds its blobs on a connection of a pool of their
own: it holds it through the upload to the bucket, and a writer that held one of the store's connections meanwhile
would leave none to commit with once as many writers were uploading as the store's pool has connections.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pocket3d.storage.artifacts import ArtifactStore, sha256_file


def lock_key(sha256: str) -> int:
    """The advisory lock key of a blob: its hash's first 8 bytes, as PostgreSQL's signed bigint. (A collision
    between two blobs only makes one wait for the other.)"""
    return int.from_bytes(bytes.fromhex(sha256[:16]), "big", signed=True) ^ _NAMESPACE


_NAMESPACE = int.from_bytes(hashlib.sha256(b"pocket3d blob").digest()[:8], "big", signed=True)


class BlobWriter:
    """What a writer stores blobs through while it holds them (:meth:`BlobLock.writing`)."""

    def __init__(self, artifacts: ArtifactStore, lock: BlobLock):
        self.artifacts, self._lock = artifacts, lock
        self._conn: Connection | None = None
        self._held: set[int] = set()
        self._holds_local = False

    def put(self, src: Path, sha256: str | None = None) -> tuple[str, int]:
        """``ArtifactStore.put``, with the blob held until the block ends (its row committed by then)."""
        digest = sha256 or sha256_file(src)
        self.hold(digest)
        return self.artifacts.put(src, digest)

    def hold(self, sha256: str) -> None:
        if self._lock.engine is None:
            # One process: its lock, from the first blob on until the block ends. A block that stores no blob (a
            # submit of a text prompt, or of uploads already stored) never waits for one that does.
            if not self._holds_local:
                self._lock._local.acquire()
                self._holds_local = True
            return
        key = lock_key(sha256)
        if key in self._held:
            return
        if self._conn is None:
            self._conn = self._lock.sessions().connect().execution_options(isolation_level="AUTOCOMMIT")
        self._conn.execute(sa.text("SELECT pg_advisory_lock_shared(:k)"), {"k": key})
        self._held.add(key)

    def _release(self) -> None:
        if self._holds_local:
            self._holds_local = False
            self._lock._local.release()
        if self._conn is None:
            return
        try:
            for key in self._held:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock_shared(:k)"), {"k": key})
        except Exception:
            self._conn.invalidate()  # a session-level lock ends with its session: never pool a connection holding one
        finally:
            self._conn.close()
            self._conn, self._held = None, set()


class BlobLock:
    """``engine``: the shared PostgreSQL database (per-blob advisory locks); None: one process (its own lock)."""

    def __init__(self, engine: Engine | None = None):
        self.engine = engine
        self._local = threading.RLock()
        self._sessions: Engine | None = None
        self._sessions_lock = threading.Lock()

    def sessions(self) -> Engine:
        """The writers' connections (see the module's docstring): one kept, more opened while more writers hold
        blobs (as many as the threads that write, at most)."""
        assert self.engine is not None
        with self._sessions_lock:
            if self._sessions is None:
                self._sessions = sa.create_engine(self.engine.url, pool_size=1, max_overflow=-1, pool_pre_ping=True)
            return self._sessions

    def close(self) -> None:
        with self._sessions_lock:
            if self._sessions is not None:
                self._sessions.dispose()
                self._sessions = None

    @contextmanager
    def writing(self, artifacts: ArtifactStore) -> Iterator[BlobWriter]:
        """``with lock.writing(artifacts) as blobs: blobs.put(path); <commit the rows that reference it>``."""
        writer = BlobWriter(artifacts, self)
        try:
            yield writer
        finally:
            writer._release()

    @contextmanager
    def deleting(self, conn: Connection | None, candidates: Iterable[str]) -> Iterator[set[str]]:
        """The candidates that no writer holds, kept from writers until the block ends; on PostgreSQL ``conn`` is
        the transaction in which the caller checks references and deletes (the locks end with it)."""
        candidates = set(candidates)
        if self.engine is None or conn is None:
            with self._local:
                yield candidates
            return
        keys = {lock_key(sha): sha for sha in candidates}
        locked = conn.execute(sa.text("SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k "
                                      "WHERE pg_try_advisory_xact_lock(k)"), {"keys": sorted(keys)}).scalars().all()
        yield {keys[k] for k in locked}
