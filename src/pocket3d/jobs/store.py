"""The durable store: one SQLAlchemy engine, read and write transactions, and the read-side queries.

Writes go through :mod:`pocket3d.jobs.transitions`. A write transaction records which jobs it changed; after
it commits, listeners (the event bus) hear of them, so nothing is announced that could still roll back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pocket3d.jobs import notify
from pocket3d.jobs.group_commit import GroupCommit
from pocket3d.jobs import schema as t
from pocket3d.jobs.records import (
    FileRecord,
    JobEvent,
    JobRecord,
    JobStatus,
    OutputRecord,
    QueuedStage,
    StageRecord,
    StageStatus,
    StageWarning,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def new_id(prefix: str) -> str:
    """Time-ordered ids (millisecond prefix), so ``ORDER BY id`` is creation order and cursors are simple."""
    return f"{prefix}_{int(time.time() * 1000):011x}{secrets.token_hex(8)}"


@dataclass
class WriteTx:
    conn: Connection
    changed_jobs: set[str] = field(default_factory=set)
    released: set[str] = field(default_factory=set)  # artifact hashes this write stopped referencing
    events: list[JobEvent] = field(default_factory=list)  # jobs submitted or finished by this write
    outbox: int = 0  # webhook deliveries this write made due
    queued: set[str | None] = field(default_factory=set)  # models of stages this write queued (None: export)
    cancelled: set[str] = field(default_factory=set)  # running jobs this write asked to stop
    # What a transition may remember for the rest of the transaction (counts it read and keeps up to date), shared
    # by the pieces of a group commit, which run one after another in it.
    memo: dict[Any, Any] = field(default_factory=dict)
    # Rows to insert when the transaction is about to commit, one statement for all of them (a group commit's pieces
    # each add theirs): for rows nothing in the transaction reads or could refuse.
    inserts: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)

    def touch(self, job_id: str) -> None:
        self.changed_jobs.add(job_id)

    def insert_at_commit(self, statement: Any, rows: list[dict[str, Any]]) -> None:
        self.inserts.setdefault(statement, []).extend(rows)

    def piece(self) -> WriteTx:
        """The record of one piece of a group commit: what it changed counts once its savepoint is kept."""
        return WriteTx(self.conn, memo=self.memo)

    def keep(self, piece: WriteTx) -> None:
        for statement, rows in piece.inserts.items():
            self.insert_at_commit(statement, rows)
        self.changed_jobs |= piece.changed_jobs
        self.released |= piece.released
        self.events.extend(piece.events)
        self.outbox += piece.outbox
        self.queued |= piece.queued
        self.cancelled |= piece.cancelled


class Store:
    def __init__(self, url: str, *, echo: bool = False):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine: Engine = _create_engine(url, echo)
        # This process's mark on its change notices (PostgreSQL), so it skips its own: it heard them after commit.
        self.origin = secrets.token_hex(6)
        self._listeners: list[Callable[[set[str]], None]] = []
        self._release_listeners: list[Callable[[set[str]], None]] = []
        self._event_listeners: list[Callable[[list[JobEvent]], None]] = []
        self._outbox_listeners: list[Callable[[], None]] = []
        # SQLite has one writer at a time. This process's writers take turns on a lock of its own before they ask
        # SQLite for its write lock, so a waiting writer wakes as soon as the lock is free instead of sleeping in
        # SQLite's busy handler (1 to 100 ms a try). Reentrant: a nested write behaves as without it.
        self._write_turn: AbstractContextManager[Any] = threading.RLock() if self.is_sqlite else nullcontext()
        self._group: GroupCommit | None = GroupCommit(self) if self.is_sqlite else None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Bring the database to this code's schema (Alembic's head revision): a new database gets every table, an
        older one is migrated in place. For the embedded node, the only process on its SQLite file; in a cluster,
        ``pocket3d db upgrade`` does it once and every process checks it (:meth:`check_schema`)."""
        from pocket3d.jobs import migrations

        migrations.upgrade(self.engine)

    def prepare_schema(self) -> None:
        """What a process does with the schema at start: on SQLite (one machine's file, whose processes share a
        data directory) bring it up to date; on PostgreSQL, shared by processes that may run other versions, only
        check it: ``pocket3d db upgrade`` migrates, once."""
        if self.is_sqlite:
            self.create_schema()
        else:
            self.check_schema()

    def check_schema(self) -> None:
        """Raise ``migrations.SchemaMismatch`` (saying what to run) unless the database has this code's schema."""
        from pocket3d.jobs import migrations

        migrations.check(self.engine)

    def dispose(self) -> None:
        if self._group is not None:
            self._group.close()
        self.engine.dispose()

    def probe_write(self) -> None:
        """A write that changes nothing but still reaches the disk (a new WAL frame on SQLite): raises when the
        store cannot write."""
        with self.write() as tx:
            tx.conn.execute(t.schema_info.update().values(version=t.schema_info.c.version))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- transactions -------------------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads. On SQLite no BEGIN is sent: each statement reads one consistent snapshot on
        its own, which is why the hot reads below are single statements."""
        with self.engine.connect().execution_options(sqlite_begin=None) as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[WriteTx]:
        with self._write_turn, self.engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn:
            tx = WriteTx(conn)
            with conn.begin():
                yield tx
                for statement, rows in tx.inserts.items():
                    conn.execute(statement, rows)
                if not self.is_sqlite:
                    # Other processes hear of the change from PostgreSQL (LISTEN/NOTIFY), only once it commits.
                    notify.announce(conn, self.origin, tx)
        # Released artifacts are announced first (clean-up), then every change (events): a client that hears
        # "succeeded" finds the job's inputs already deleted.
        for items, listeners in ((tx.released, self._release_listeners), (tx.changed_jobs, self._listeners),
                                 (tx.events, self._event_listeners)):
            if not items:
                continue
            for listener in list(listeners):
                try:
                    listener(items)
                except Exception:  # a listener must never undo or fail a committed write
                    log.exception("store listener failed")
        if tx.outbox:
            for wake in list(self._outbox_listeners):
                wake()

    def write_grouped(self, work: Callable[[WriteTx], T]) -> T:
        """``work(tx)`` in a write transaction it may share with writes asked for at the same moment (on SQLite: a
        group commit, each in a savepoint of its own, see :mod:`pocket3d.jobs.group_commit`); its result once the
        transaction has committed and the listeners heard of it, or what it raised, having changed nothing.
        ``work`` may run in another thread, and only writes through ``tx``."""
        if self._group is None:
            with self.write() as tx:
                return work(tx)
        return self._group.run(work)

    @property
    def commits_in_groups(self) -> bool:
        """Whether writes asked for together share a transaction (SQLite), so a coroutine can join one without a
        thread of its own (:meth:`write_grouped_async`)."""
        return self._group is not None

    async def write_grouped_async(self, work: Callable[[WriteTx], T]) -> T:
        """:meth:`write_grouped` for a coroutine: ``work`` runs in a thread, the coroutine waits in its loop."""
        if self._group is None:
            return await asyncio.to_thread(self.write_grouped, work)
        return await self._group.run_async(work)

    def add_listener(self, fn: Callable[[set[str]], None]) -> None:
        """``fn(job_ids)`` after every write that changed those jobs."""
        self._listeners.append(fn)

    def add_release_listener(self, fn: Callable[[set[str]], None]) -> None:
        """``fn(sha256s)`` after a write that dropped references to those artifacts, before change listeners."""
        self._release_listeners.append(fn)

    def add_event_listener(self, fn: Callable[[list[JobEvent]], None]) -> None:
        """``fn(events)`` after a write that submitted or finished jobs."""
        self._event_listeners.append(fn)

    def add_outbox_listener(self, fn: Callable[[], None]) -> None:
        """``fn()`` after a write that made webhook deliveries due (the sender wakes up)."""
        self._outbox_listeners.append(fn)

    # -- reads --------------------------------------------------------------------------------------------

    def get_job(self, job_id: str, conn: Connection | None = None) -> JobRecord | None:
        if conn is None:
            with self.read() as c:
                return self.get_job(job_id, c)
        # One statement for the job and its stages, so the two always agree.
        rows = conn.execute(_JOB_WITH_STAGES, {"job_id": job_id}).mappings().all()
        if not rows:
            return None
        row = rows[0]
        stages = [_stage({k[2:]: r[k] for k in _STAGE_KEYS}) for r in rows]
        output_rows = []
        if row["status"] == JobStatus.SUCCEEDED:  # outputs are final once the job has succeeded
            output_rows = conn.execute(_OUTPUTS_OF_JOB, {"job_id": job_id}).mappings().all()
        return _job(row, stages, [_output(o) for o in output_rows])

    def list_jobs(self, owner_id: str | None, *, status: str | None = None, feature: str | None = None,
                  before_id: str | None = None, limit: int = 20) -> list[JobRecord]:
        q = sa.select(t.jobs.c.id)
        if owner_id is not None:
            q = q.where(t.jobs.c.owner_id == owner_id)
        if status:
            q = q.where(t.jobs.c.status == status)
        if feature:
            q = q.where(t.jobs.c.feature == feature)
        if before_id:
            q = q.where(t.jobs.c.id < before_id)
        q = q.order_by(t.jobs.c.id.desc()).limit(limit)
        with self.read() as conn:
            ids = conn.execute(q).scalars().all()
            return [j for j in (self.get_job(i, conn) for i in ids) if j is not None]

    def recent_stage_seconds(self, limit: int = 200) -> dict[tuple[str, str], float]:
        """Mean run time of recently finished stages by (model id, or the stage's name for pocket3d's own
        stages; the job's quality)."""
        s, j = t.stages.c, t.jobs.c
        with self.read() as conn:
            rows = conn.execute(sa.select(s.model_id, s.name, s.started_at, s.finished_at, j.request)
                                .join(t.jobs, j.id == s.job_id)
                                .where(s.status == StageStatus.SUCCEEDED, s.started_at.is_not(None))
                                .order_by(s.finished_at.desc()).limit(limit)).all()
        totals: dict[tuple[str, str], list[float]] = {}
        for model_id, name, started, finished, request in rows:
            quality = str((request or {}).get("quality") or "medium")
            totals.setdefault((model_id or name, quality), []).append(max(0.0, finished - started))
        return {k: sum(v) / len(v) for k, v in totals.items()}

    def queued_stages(self, limit: int = 10_000, job_ids: Collection[str] | None = None) -> list[QueuedStage]:
        """Stages ready to run, with what the scheduler's ordering needs from their jobs; of those jobs only, when
        ``job_ids`` are given (the scheduler's incremental view reads only the jobs that changed)."""
        s, j = t.stages.c, t.jobs.c
        queued = s.status == StageStatus.QUEUED
        pending = s.status == StageStatus.PENDING
        if job_ids is not None:
            queued = queued & s.job_id.in_(list(job_ids))
            pending = pending & s.job_id.in_(list(job_ids))
        with self.read() as conn:
            rows = conn.execute(
                sa.select(s.id, s.job_id, s.idx, s.model_id, j.feature, j.priority, j.created_at, s.queued_at)
                .join(t.jobs, j.id == s.job_id).where(queued)
                .order_by(s.queued_at, s.id).limit(limit)).all()
            # the stages after each queued one (a job has one queued stage at a time; the rest are pending)
            waiting = conn.execute(sa.select(s.job_id, s.model_id).where(pending)
                                   .order_by(s.job_id, s.idx)).all() if rows else []
        later: dict[str, list[str | None]] = {}
        for w in waiting:
            later.setdefault(w.job_id, []).append(w.model_id)
        return [QueuedStage(stage_id=r.id, job_id=r.job_id, index=r.idx, model_id=r.model_id, feature=r.feature,
                            priority=r.priority, submitted_at=r.created_at, queued_at=r.queued_at or r.created_at,
                            later=tuple(later.get(r.job_id, ())))
                for r in rows]

    def queue_depth(self) -> list[tuple[str, int, int]]:
        """(feature, priority, stages) of the stages waiting for a device, by their job's feature and priority."""
        s, j = t.stages.c, t.jobs.c
        with self.read() as conn:
            rows = conn.execute(sa.select(j.feature, j.priority, sa.func.count()).join(t.jobs, j.id == s.job_id)
                                .where(s.status == StageStatus.QUEUED).group_by(j.feature, j.priority)).all()
        return [(feature, priority, n) for feature, priority, n in rows]

    def count_active_jobs(self, conn: Connection, owner_id: str, *, owner_limit: int, limit: int) -> tuple[int, int]:
        """Jobs waiting or running: ``(of the owner, of everyone)``, each counted up to its limit only (what a cap
        needs to know), so a long queue does not make every submit count all of it. One statement."""
        return tuple(conn.execute(_ACTIVE_COUNTS, {"p_owner": owner_id, "p_owner_limit": owner_limit,
                                                   "p_limit": limit}).one())  # type: ignore[return-value]

    def get_file(self, file_id: str, conn: Connection | None = None) -> FileRecord | None:
        if conn is None:
            with self.read() as c:
                return self.get_file(file_id, c)
        row = conn.execute(sa.select(t.files).where(t.files.c.id == file_id)).mappings().first()
        return _file(row) if row else None

    def idempotent_job(self, owner_id: str, key: str, now: float) -> tuple[str, str] | None:
        """``(job_id, fingerprint)`` of the unexpired submit this owner made with this Idempotency-Key."""
        k = t.idempotency_keys.c
        with self.read() as conn:
            row = conn.execute(sa.select(k.job_id, k.fingerprint).where(
                k.owner_id == owner_id, k.key == key, k.expires_at >= now)).first()
        return (row.job_id, row.fingerprint) if row else None

    def list_files(self, owner_id: str | None, *, now: float, before_id: str | None = None,
                   limit: int = 20) -> list[FileRecord]:
        """Uploads not yet expired, newest first (``owner_id`` None: every owner's)."""
        f = t.files.c
        q = sa.select(t.files).where(sa.or_(f.expires_at.is_(None), f.expires_at > now))
        if owner_id is not None:
            q = q.where(f.owner_id == owner_id)
        if before_id:
            q = q.where(f.id < before_id)
        with self.read() as conn:
            rows = conn.execute(q.order_by(f.id.desc()).limit(limit)).mappings().all()
        return [_file(r) for r in rows]

    def expired_file_owner(self, file_id: str) -> str | None:
        """The owner of an upload that expired (its tombstone), or None: never existed, deleted, or forgotten."""
        with self.read() as conn:
            return conn.execute(sa.select(t.file_tombstones.c.owner_id)
                                .where(t.file_tombstones.c.id == file_id)).scalar()

    def job_inputs(self, job_id: str) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(sa.select(t.job_inputs).where(t.job_inputs.c.job_id == job_id)
                                .order_by(t.job_inputs.c.position)).mappings().all()
        return [dict(r) for r in rows]

    def stage_outputs(self, job_id: str, stage_idx: int) -> list[OutputRecord]:
        with self.read() as conn:
            rows = conn.execute(sa.select(t.outputs).where(t.outputs.c.job_id == job_id,
                                                           t.outputs.c.stage_idx == stage_idx)).mappings().all()
        return [_output(r) for r in rows]



def _count_up_to(where: sa.ColumnElement[bool], limit: sa.BindParameter[int]) -> sa.ScalarSelect[int]:
    found = sa.select(sa.literal_column("1")).select_from(t.jobs).where(where).limit(limit).subquery()
    return sa.select(sa.func.count()).select_from(found).scalar_subquery()


# The statuses written into the statement, not bound: an index on status serves the count, and the statement needs
# no expanding at each execution.
_ACTIVE = t.jobs.c.status.in_([sa.literal_column(f"'{s.value}'") for s in (JobStatus.QUEUED, JobStatus.RUNNING)])
_ACTIVE_COUNTS = sa.select(
    _count_up_to(_ACTIVE & (t.jobs.c.owner_id == sa.bindparam("p_owner")), sa.bindparam("p_owner_limit")),
    _count_up_to(_ACTIVE, sa.bindparam("p_limit")))
_STAGE_KEYS = [f"s_{c.name}" for c in t.stages.c]
_JOB_WITH_STAGES = (
    sa.select(t.jobs, *[c.label(f"s_{c.name}") for c in t.stages.c])
    .join(t.stages, t.stages.c.job_id == t.jobs.c.id)
    .where(t.jobs.c.id == sa.bindparam("job_id"))
    .order_by(t.stages.c.idx)
)
_OUTPUTS_OF_JOB = (sa.select(t.outputs).where(t.outputs.c.job_id == sa.bindparam("job_id"))
                   .order_by(t.outputs.c.stage_idx, t.outputs.c.name))


def _create_engine(url: str, echo: bool) -> Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, echo=echo, pool_pre_ping=True, future=True)
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # As many pooled connections as the threadpool has threads (anyio's default 40), so a burst of requests
    # does not open and close connections, each with its PRAGMAs.
    engine = sa.create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30},
                              pool_size=40, max_overflow=8)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not the driver, decide how a transaction starts.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a job a client was told about survives power loss too, not only a killed process.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front (IMMEDIATE): a deferred transaction that upgrades from read
        # to write can fail with SQLITE_BUSY at once instead of waiting on busy_timeout. Plain reads send none.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode is not None:
            conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _stage(r: Any) -> StageRecord:
    return StageRecord(id=r["id"], job_id=r["job_id"], index=r["idx"], name=r["name"], model_id=r["model_id"],
                       params=r["params"] or {}, status=StageStatus(r["status"]), progress=r["progress"],
                       attempts=r["attempts"], max_attempts=r["max_attempts"], started_at=r["started_at"],
                       finished_at=r["finished_at"], error_code=r["error_code"], error_message=r["error_message"],
                       device=r["device"], message=r["message"],
                       warnings=[StageWarning(w["code"], w["message"]) for w in r["warnings"] or []],
                       details=r["details"])


def _output(r: Any) -> OutputRecord:
    return OutputRecord(name=r["name"], stage_index=r["stage_idx"], sha256=r["sha256"], size=r["size"],
                        media_type=r["media_type"], format=r["format"], public=bool(r["public"]))


def _job(r: Any, stages: list[StageRecord], outputs: list[OutputRecord]) -> JobRecord:
    return JobRecord(id=r["id"], owner_id=r["owner_id"], feature=r["feature"], model_id=r["model_id"],
                     status=JobStatus(r["status"]), progress=r["progress"], current_stage=r["current_stage"],
                     priority=r["priority"], request=r["request"] or {}, error_code=r["error_code"],
                     error_message=r["error_message"], cancel_requested=bool(r["cancel_requested"]),
                     created_at=r["created_at"], started_at=r["started_at"], finished_at=r["finished_at"],
                     expires_at=r["expires_at"], version=r["version"], stages=stages, outputs=outputs,
                     input=r["input"])


def _file(r: Any) -> FileRecord:
    return FileRecord(id=r["id"], owner_id=r["owner_id"], sha256=r["sha256"], size=r["size"],
                      media_type=r["media_type"], kind=r["kind"], format=r["format"], filename=r["filename"],
                      created_at=r["created_at"], expires_at=r["expires_at"])
