"""Every change of job and stage state, one function per transition, each one transaction.

A stage is held under a lease (``lease_token``, ``lease_expires_at``). Reports about a stage carry the token;
a report whose token no longer matches (the lease expired and the stage was handed to someone else) changes
nothing, so a worker that comes back from the dead cannot complete a stage twice.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import outbox
from pocket3d.jobs import schema as t
from pocket3d.jobs.records import (
    FINAL_EVENTS,
    ClaimedStage,
    JobInput,
    JobEvent,
    JobStatus,
    NewFile,
    NewJob,
    OutputRecord,
    StageStatus,
    StageWarning,
)
from pocket3d.jobs.store import Store, WriteTx, _stage, new_id

J = t.jobs.c
S = t.stages.c
DEFAULT_MAX_INTERRUPTIONS = 10  # scheduler.max_interruptions
MAX_MESSAGE = 500  # characters of a progress message kept
MAX_WARNINGS = 20  # a stage's warnings kept: a model that warns in a loop must not bloat the job


# How long an expired upload's id is remembered (answering 410 FILE_EXPIRED); after that it answers 404.
TOMBSTONE_SECONDS = 30 * 86400.0


class ReleasePolicy:
    """What a job leaves behind when it ends: a succeeded job's outputs, kept ``keep_seconds``
    (storage.cleanup_after). Its inputs are not its to delete: an upload lives until its own expires_at."""

    def __init__(self, keep_seconds: float = 86400.0):
        self.keep_seconds = keep_seconds


def _lock_job(tx: WriteTx, job_id: str) -> Any:
    """Lock the job's row (PostgreSQL; SQLite's writer already holds the database) and read what decides."""
    return tx.conn.execute(sa.select(J.status, J.cancel_requested, J.stage_weights).where(J.id == job_id)
                           .with_for_update()).first()


# -- files ---------------------------------------------------------------------------------------------------

def register_file(store: Store, new: NewFile, *, now: float, expires_at: float) -> None:
    """An upload, usable by any number of its owner's jobs until ``expires_at``."""
    with store.write() as tx:
        tx.conn.execute(t.files.insert().values(**_file_row(new, now, expires_at)))


def _file_row(new: NewFile, now: float, expires_at: float | None) -> dict[str, Any]:
    return dict(id=new.id, owner_id=new.owner_id, sha256=new.sha256, size=new.size, media_type=new.media_type,
                kind=new.kind, format=new.format, filename=new.filename, created_at=now, expires_at=expires_at)


def delete_file(store: Store, file_id: str) -> None:
    """Its owner deleted an upload: the id answers 404 from now on. The blob goes once no row references it and
    no waiting or running job took it (Retention.collect)."""
    with store.write() as tx:
        # Locked, so a submit taking this file either commits first (its job then holds the blob) or finds it gone.
        sha = tx.conn.execute(sa.select(t.files.c.sha256).where(t.files.c.id == file_id).with_for_update()).scalar()
        if sha is None:
            raise Pocket3DError(ErrorCode.FILE_NOT_FOUND, f"file {file_id} not found", {"file_id": file_id})
        tx.conn.execute(t.files.delete().where(t.files.c.id == file_id))
        tx.released.add(sha)


def is_expired(expires_at: float | None, now: float) -> bool:
    return expires_at is not None and expires_at <= now


# -- submit --------------------------------------------------------------------------------------------------

class IdempotencyKeyTaken(Exception):
    """The submit's Idempotency-Key is held by another job (found here, or committed first by a concurrent
    submit); nothing was written. The caller reads that job with ``Store.idempotent_job``."""


def submit(store: Store, new: NewJob, *, queue_size: int, max_attempts: int, now: float,
           owner_limit: int | None = None) -> str:
    """Persist a job, its stages, its inputs and its Idempotency-Key in one transaction; the first stage is queued
    at once.

    Each input is checked again here, under a lock, so an upload deleted or expiring (or a source job's outputs
    expiring) while the request was validated is refused rather than taken without its blob. The submits arriving
    together share one transaction and one sync to disk (a group commit, on SQLite), each in a savepoint: a refused
    one leaves nothing, the others still go in."""
    with _key_taken(new):
        return store.write_grouped(lambda tx: _persist_job(store, tx, new, queue_size=queue_size,
                                                           max_attempts=max_attempts, now=now, owner_limit=owner_limit))


async def submit_async(store: Store, new: NewJob, *, queue_size: int, max_attempts: int, now: float,
                       owner_limit: int | None = None) -> str:
    """:func:`submit` for a coroutine (``Store.write_grouped_async``)."""
    with _key_taken(new):
        return await store.write_grouped_async(lambda tx: _persist_job(
            store, tx, new, queue_size=queue_size, max_attempts=max_attempts, now=now, owner_limit=owner_limit))


@contextmanager
def _key_taken(new: NewJob) -> Iterator[None]:
    """A unique-key failure of a submit with an Idempotency-Key: a concurrent submit with the key committed first."""
    try:
        yield
    except sa.exc.IntegrityError as e:
        if new.idempotency is None:
            raise
        raise IdempotencyKeyTaken(new.idempotency.key) from e


# The submit's statements, built once: building (and hashing for the compiled cache) a statement costs more than
# running it on SQLite, and a burst of submits runs these thousands of times a second.
_KEY_HELD = (t.idempotency_keys.c.owner_id == sa.bindparam("p_owner")) & (t.idempotency_keys.c.key == sa.bindparam("p_key"))
_FIND_KEY = sa.select(t.idempotency_keys.c.job_id).where(_KEY_HELD, t.idempotency_keys.c.expires_at >= sa.bindparam("p_now"))
_DROP_EXPIRED_KEY = t.idempotency_keys.delete().where(_KEY_HELD, t.idempotency_keys.c.expires_at < sa.bindparam("p_now"))
_INSERT_JOB = t.jobs.insert()
_INSERT_STAGES = t.stages.insert()
_INSERT_INPUTS = t.job_inputs.insert()
_INSERT_KEY = t.idempotency_keys.insert()


def _persist_job(store: Store, tx: WriteTx, new: NewJob, *, queue_size: int, max_attempts: int, now: float,
                 owner_limit: int | None) -> str:
    job_id = new_id("job")
    key = new.idempotency
    if key is not None:
        held = {"p_owner": new.owner_id, "p_key": key.key, "p_now": now}
        if tx.conn.execute(_FIND_KEY, held).first() is not None:
            raise IdempotencyKeyTaken(key.key)
        tx.conn.execute(_DROP_EXPIRED_KEY, held)  # expired, not swept yet
    # Outputs before files, the order expire() deletes them in, so the two never wait on each other.
    sources = _lock_outputs(tx, [inp for inp in new.inputs if inp.job_id is not None], now)
    uploads = _lock_files(tx, [inp.file_id for inp in new.inputs if inp.file_id and not inp.inline], now)
    active = _active_jobs(store, tx, new.owner_id, owner_limit or 0, queue_size)
    owner_active, everyone = active.get(new.owner_id, 0), active[None]
    # The owner's own cap first: when one owner's flood fills the queue, they hear 429, the others still get in.
    if owner_limit is not None and owner_active >= owner_limit:
        raise Pocket3DError(ErrorCode.CONCURRENCY_LIMITED, f"you have {owner_limit} jobs waiting or running, "
                            "the most one owner may have", {"max_jobs_per_owner": owner_limit},
                            headers={"Retry-After": "10"},
                            hint="send it again when one of your jobs has ended (GET /api/v1/jobs?status=queued)")
    if everyone >= queue_size:
        raise Pocket3DError(ErrorCode.QUEUE_FULL, f"the queue holds {queue_size} jobs; try again later",
                            {"queue_size": queue_size}, headers={"Retry-After": "30"},
                            hint="send it again after the Retry-After seconds")
    # Values as parameters, not .values(): the statement stays the same one, compiled once. Without an Idempotency-
    # Key nothing can refuse these rows (fresh ids) and nothing here reads them: they go in with the other submits
    # of the group commit, one statement per table. (A key's row refers to its job, so that job goes in now.)
    insert = tx.insert_at_commit if key is None else (lambda statement, rows: tx.conn.execute(statement, rows))
    insert(_INSERT_JOB, [dict(
        id=job_id, owner_id=new.owner_id, feature=new.feature, model_id=new.model_id,
        status=JobStatus.QUEUED, progress=0.0, current_stage=0, priority=new.priority,
        request=new.request, input=new.input, stage_weights=[s.weight for s in new.stages],
        cancel_requested=False, created_at=now, version=1)])
    insert(_INSERT_STAGES, [
        dict(job_id=job_id, idx=i, name=s.name, model_id=s.model_id, params=s.params,
             status=StageStatus.QUEUED if i == 0 else StageStatus.PENDING, progress=0.0, attempts=0,
             max_attempts=max_attempts, priority=new.priority, queued_at=now if i == 0 else None)
        for i, s in enumerate(new.stages)])
    rows = []
    for i, inp in enumerate(new.inputs):
        if inp.inline:
            ref, sha, fmt = inp.file_id or new_id("file"), inp.sha256, inp.format
        elif inp.job_id is not None:
            ref, (sha, fmt) = inp.job_id, sources[(inp.job_id, inp.output)]
        else:
            ref, (sha, fmt) = inp.file_id, uploads[inp.file_id]
        rows.append(dict(job_id=job_id, position=i, file_id=ref, role=inp.role, sha256=sha, format=fmt))
    if rows:
        insert(_INSERT_INPUTS, rows)
    if key is not None:
        tx.conn.execute(_INSERT_KEY, dict(
            owner_id=new.owner_id, key=key.key, fingerprint=key.fingerprint, job_id=job_id, created_at=now,
            expires_at=key.expires_at))
    # Nothing below can fail: the counts stay true for the next submit in this transaction.
    active[None] += 1
    if new.owner_id in active:
        active[new.owner_id] += 1
    tx.touch(job_id)
    tx.queued.add(new.stages[0].model_id)
    tx.events.append(JobEvent("submitted", job_id, new.feature, JobStatus.QUEUED))
    return job_id


# PostgreSQL: submits in a cluster count and insert under this transaction-scoped advisory lock, one at a time, so
# two gateways' submits committing together cannot each see room for one more job (SQLite's writers already take
# turns). Held for the count and the inserts only: a few milliseconds.
SUBMIT_LOCK = 0x70336402
_TAKE_SUBMIT_LOCK = sa.text("SELECT pg_advisory_xact_lock(:k)")

_ACTIVE_JOBS = "active_jobs"  # WriteTx.memo: {None: jobs waiting or running, owner: theirs}, each up to its cap


def _active_jobs(store: Store, tx: WriteTx, owner_id: str, owner_limit: int, queue_size: int) -> dict[str | None, int]:
    """Jobs waiting or running, in all and of ``owner_id``, read once per transaction: the submits of a group commit
    keep them up to date. (Counted up to the caps only, which is all a cap needs; an owner whose count was not read
    with a cap, ``owner_limit`` 0, is read again when one is given.)"""
    active: dict[str | None, int] = tx.memo.setdefault(_ACTIVE_JOBS, {})
    if None not in active or (owner_limit and owner_id not in active):
        if not store.is_sqlite and not active:
            tx.conn.execute(_TAKE_SUBMIT_LOCK, {"k": SUBMIT_LOCK})
        owner_active, everyone = store.count_active_jobs(tx.conn, owner_id, owner_limit=owner_limit, limit=queue_size)
        active.setdefault(None, everyone)
        if owner_limit:
            active[owner_id] = owner_active
    return active


def _lock_files(tx: WriteTx, file_ids: list[str], now: float) -> dict[str, tuple[str, str]]:
    """(sha256, format) of each upload, locked against delete_file and expire; refused if gone or expired."""
    if not file_ids:
        return {}
    f = t.files.c
    found = {r.id: r for r in tx.conn.execute(sa.select(f.id, f.sha256, f.format, f.expires_at)
                                              .where(f.id.in_(file_ids)).order_by(f.id).with_for_update())}
    for file_id in file_ids:
        row = found.get(file_id)
        if row is None:
            gone = tx.conn.execute(sa.select(t.file_tombstones.c.id).where(t.file_tombstones.c.id == file_id)).first()
            raise _file_gone(file_id, expired=gone is not None)
        if is_expired(row.expires_at, now):
            raise _file_gone(file_id, expired=True)
    return {r.id: (r.sha256, r.format) for r in found.values()}


def _file_gone(file_id: str, *, expired: bool) -> Pocket3DError:
    if expired:
        return Pocket3DError(ErrorCode.FILE_EXPIRED, f"file {file_id} has expired", {"file_id": file_id},
                             hint="upload it again with POST /api/v1/files")
    return Pocket3DError(ErrorCode.FILE_NOT_FOUND, f"file {file_id} not found", {"file_id": file_id})


def _lock_outputs(tx: WriteTx, inputs: list[JobInput], now: float) -> dict[tuple[str, str], tuple[str, str]]:
    """(sha256, format) of each job output named as an input, locked against expire; refused unless its job
    succeeded and its outputs have not expired."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    o = t.outputs.c
    for inp in sorted(inputs, key=lambda i: (i.job_id, i.output)):
        assert inp.job_id is not None and inp.output is not None
        row = tx.conn.execute(sa.select(o.sha256, o.format, J.status, J.expires_at)
                              .join(t.jobs, J.id == o.job_id)
                              .where(o.job_id == inp.job_id, o.name == inp.output)
                              .with_for_update(of=t.outputs)).first()
        if row is None or row.status != JobStatus.SUCCEEDED or is_expired(row.expires_at, now):
            raise Pocket3DError(ErrorCode.OUTPUT_EXPIRED, f"output {inp.output!r} of job {inp.job_id} is no longer "
                                "stored", {"job_id": inp.job_id, "output": inp.output})
        out[(inp.job_id, inp.output)] = (row.sha256, row.format)
    return out


# -- claim and run -------------------------------------------------------------------------------------------

def claim_next_stage(store: Store, *, worker_id: str, model_ids: Sequence[str], include_export: bool,
                     lease_seconds: float, now: float) -> ClaimedStage | None:
    """Take the most urgent queued stage among those this worker can host right now."""
    hostable = S.model_id.in_(list(model_ids)) if model_ids else sa.false()
    if include_export:
        hostable = sa.or_(hostable, S.model_id.is_(None))
    pick = (sa.select(S.id).where(S.status == StageStatus.QUEUED, hostable)
            .order_by(S.priority.desc(), S.queued_at, S.id).limit(1))
    if not store.is_sqlite:
        pick = pick.with_for_update(skip_locked=True)
    with store.write() as tx:
        stage_id = tx.conn.execute(pick).scalar()
        return None if stage_id is None else _claim(tx, stage_id, worker_id, lease_seconds, now)


def claim_stage(store: Store, stage_id: int, *, worker_id: str, lease_seconds: float, now: float,
                device: str | None = None) -> ClaimedStage | None:
    """Take this queued stage (the scheduler's placement chose it, for ``device``); None if it is no longer
    queued (another node took it, or its job was cancelled)."""
    with store.write() as tx:
        if not store.is_sqlite:
            # Two nodes reaching for one stage: the second moves on at once instead of waiting for the first's
            # commit (SQLite has one writer at a time anyway).
            free = tx.conn.execute(sa.select(S.id).where(S.id == stage_id, S.status == StageStatus.QUEUED)
                                   .with_for_update(skip_locked=True)).first()
            if free is None:
                return None
        return _claim(tx, stage_id, worker_id, lease_seconds, now, device)


def _claim(tx: WriteTx, stage_id: int, worker_id: str, lease_seconds: float, now: float,
           device: str | None = None) -> ClaimedStage | None:
    token = secrets.token_hex(16)
    row = tx.conn.execute(
        t.stages.update().where(S.id == stage_id, S.status == StageStatus.QUEUED)
        .values(status=StageStatus.RUNNING, attempts=S.attempts + 1, lease_owner=worker_id,
                lease_token=token, lease_expires_at=now + lease_seconds, started_at=now, progress=0.0,
                error_code=None, error_message=None, device=device, message=None, warnings=None, details=None)
        .returning(*t.stages.c)).mappings().first()
    if row is None:
        return None
    stage = _stage(row)
    job = tx.conn.execute(
        t.jobs.update().where(J.id == stage.job_id)
        .values(status=JobStatus.RUNNING, started_at=sa.func.coalesce(J.started_at, now),
                current_stage=stage.index, version=J.version + 1)
        .returning(J.request, J.owner_id)).first()
    tx.touch(stage.job_id)
    return ClaimedStage(stage=stage, lease_token=token, job_request=job.request, owner_id=job.owner_id)


def renew_leases(store: Store, claims: Sequence[ClaimedStage], *, lease_seconds: float, now: float) -> set[int]:
    """Extend the leases of stages this worker is really running (not merely every stage it once claimed). Returns
    the stages it should stop: those whose lease it lost (another node took them over while this one was paused or
    cut off) and those whose job was asked to cancel (a notice this node may have missed)."""
    if not claims:
        return set()
    tokens = {c.stage.id: c.lease_token for c in claims}
    with store.write() as tx:
        held = tx.conn.execute(t.stages.update().where(S.id.in_(list(tokens)), S.status == StageStatus.RUNNING)
                               .where(S.lease_token == sa.case(tokens, value=S.id))
                               .values(lease_expires_at=now + lease_seconds).returning(S.id, S.job_id)).all()
        stop = set(tokens) - {r.id for r in held}
        cancelled = set(tx.conn.execute(sa.select(J.id).where(J.id.in_(list({r.job_id for r in held})),
                                                              J.cancel_requested.is_(True))).scalars()) if held else ()
        stop.update(r.id for r in held if r.job_id in cancelled)
    return stop


def holds_lease(store: Store, claim: ClaimedStage) -> bool:
    """Whether this claim is still the stage's (checked before storing its outputs: a node that lost the lease
    writes nothing for it)."""
    with store.read() as conn:
        return conn.execute(sa.select(S.id).where(S.id == claim.stage.id, S.lease_token == claim.lease_token,
                                                  S.status == StageStatus.RUNNING)).first() is not None


def report_progress(store: Store, claim: ClaimedStage, fraction: float, now: float, message: str | None = None, *,
                    webhook_interval: float = 10.0) -> bool:
    """Record a stage's progress and the model's message (None keeps the last one); returns False when the
    worker should stop (job cancelled, lease lost).

    A job.progress webhook goes to those who asked for one, at most every ``webhook_interval`` seconds."""
    fraction = min(max(fraction, 0.0), 1.0)
    values: dict[str, Any] = {"progress": fraction}
    if message is not None:
        values["message"] = message[:MAX_MESSAGE]
    with store.write() as tx:
        owned = tx.conn.execute(t.stages.update().where(S.id == claim.stage.id, S.lease_token == claim.lease_token,
                                                        S.status == StageStatus.RUNNING)
                                .values(**values)).rowcount
        if not owned:
            return False
        job = tx.conn.execute(sa.select(J.stage_weights, J.cancel_requested).where(J.id == claim.stage.job_id)).first()
        tx.conn.execute(t.jobs.update().where(J.id == claim.stage.job_id).values(
            progress=_job_progress(job.stage_weights, claim.stage.index, fraction), version=J.version + 1))
        tx.touch(claim.stage.job_id)
        if not job.cancel_requested:
            outbox.enqueue_progress(tx, claim.stage.job_id, now, webhook_interval)
        return not job.cancel_requested


def complete_stage(store: Store, claim: ClaimedStage, outputs: Sequence[OutputRecord], *,
                   release: ReleasePolicy, now: float, warnings: Sequence[StageWarning] = (),
                   details: dict[str, Any] | None = None, message: str | None = None) -> bool:
    """Store a stage's outputs, what it warned of and found out (and its last progress message, when that was
    not written yet), and move on: queue the next stage, or finish the job. False if the lease was lost.

    A cancel that arrived after the stage's last progress report is honoured here, at the stage boundary."""
    st = claim.stage
    values: dict[str, Any] = dict(status=StageStatus.SUCCEEDED, progress=1.0, finished_at=now, lease_owner=None,
                                  lease_token=None, lease_expires_at=None, details=details,
                                  warnings=[w.as_dict() for w in warnings[:MAX_WARNINGS]] or None)
    if message is not None:
        values["message"] = message[:MAX_MESSAGE]
    with store.write() as tx:
        job = _lock_job(tx, st.job_id)
        owned = tx.conn.execute(t.stages.update().where(S.id == st.id, S.lease_token == claim.lease_token,
                                                        S.status == StageStatus.RUNNING)
                                .values(**values)).rowcount
        if not owned:  # fenced: another node holds the stage now; what this one stored is nobody's
            tx.released.update(o.sha256 for o in outputs)
            return False
        if job.cancel_requested:
            released = {o.sha256 for o in outputs}
            _cancel_now(tx, st.job_id, now, release)
            tx.released.update(released)
            return True
        # A retried stage replaces what an earlier attempt of it stored: each output exists once.
        tx.conn.execute(t.outputs.delete().where(t.outputs.c.job_id == st.job_id, t.outputs.c.stage_idx == st.index))
        if outputs:
            tx.conn.execute(t.outputs.insert(), [
                dict(job_id=st.job_id, name=o.name, stage_idx=st.index, sha256=o.sha256, size=o.size,
                     media_type=o.media_type, format=o.format, public=o.public) for o in outputs])
        nxt = tx.conn.execute(t.stages.update().where(S.job_id == st.job_id, S.idx == st.index + 1,
                                                      S.status == StageStatus.PENDING)
                              .values(status=StageStatus.QUEUED, queued_at=now).returning(S.model_id)).first()
        if nxt is not None:
            tx.queued.add(nxt.model_id)
            tx.conn.execute(t.jobs.update().where(J.id == st.job_id).values(
                current_stage=st.index + 1, progress=_job_progress(job.stage_weights, st.index + 1, 0.0),
                version=J.version + 1))
        else:
            _finish_job(tx, st.job_id, JobStatus.SUCCEEDED, now, release)
        tx.touch(st.job_id)
    return True


def fail_stage(store: Store, claim: ClaimedStage, *, code: str, message: str, retry: bool,
               release: ReleasePolicy, now: float) -> bool:
    """A stage attempt failed: queue it again if ``retry`` and attempts remain, else fail the job."""
    st = claim.stage
    with store.write() as tx:
        job = _lock_job(tx, st.job_id)
        row = tx.conn.execute(sa.select(S.attempts, S.max_attempts).where(
            S.id == st.id, S.lease_token == claim.lease_token, S.status == StageStatus.RUNNING)).first()
        if row is None:
            return False
        if retry and row.attempts < row.max_attempts and job.cancel_requested:
            _cancel_now(tx, st.job_id, now, release)
        elif retry and row.attempts < row.max_attempts:
            tx.conn.execute(t.stages.update().where(S.id == st.id).values(
                status=StageStatus.QUEUED, progress=0.0, lease_owner=None, lease_token=None,
                lease_expires_at=None, error_code=code, error_message=message))
            tx.conn.execute(t.jobs.update().where(J.id == st.job_id).values(version=J.version + 1))
            tx.queued.add(st.model_id)
        else:
            tx.conn.execute(t.stages.update().where(S.id == st.id).values(
                status=StageStatus.FAILED, finished_at=now, lease_owner=None, lease_token=None,
                lease_expires_at=None, error_code=code, error_message=message))
            _finish_job(tx, st.job_id, JobStatus.FAILED, now, release, code=code, message=message)
        tx.touch(st.job_id)
    return True


def requeue_stage(store: Store, claim: ClaimedStage, *, release: ReleasePolicy, now: float) -> bool:
    """Give a stage back untried (the node is shutting down): queued again, the attempt not counted; or
    cancelled, if its job was cancelled meanwhile."""
    st = claim.stage
    with store.write() as tx:
        job = _lock_job(tx, st.job_id)
        owned = tx.conn.execute(sa.select(S.id).where(S.id == st.id, S.lease_token == claim.lease_token,
                                                      S.status == StageStatus.RUNNING)).first()
        if owned is None:
            return False
        if job.cancel_requested:
            _cancel_now(tx, st.job_id, now, release)
            return True
        tx.conn.execute(t.stages.update().where(S.id == st.id).values(
            status=StageStatus.QUEUED, progress=0.0, attempts=S.attempts - 1, lease_owner=None, lease_token=None,
            lease_expires_at=None))
        tx.conn.execute(t.jobs.update().where(J.id == st.job_id).values(version=J.version + 1))
        tx.touch(st.job_id)
        tx.queued.add(st.model_id)
    return True


# -- cancel --------------------------------------------------------------------------------------------------

def cancel_job(store: Store, job_id: str, *, release: ReleasePolicy, now: float) -> JobStatus:
    """Cancel at once when no stage runs; otherwise flag it and the worker stops at its next report."""
    with store.write() as tx:
        job = _lock_job(tx, job_id)
        if job is None:
            raise Pocket3DError(ErrorCode.JOB_NOT_FOUND, f"job {job_id} not found")
        status = JobStatus(job.status)
        if status == JobStatus.CANCELLED:
            return status
        if status.is_final:
            raise Pocket3DError(ErrorCode.JOB_NOT_CANCELLABLE, f"job {job_id} already {status.value}",
                                {"status": status.value}, hint="a job that has ended has nothing left to cancel")
        running = tx.conn.execute(sa.select(sa.func.count()).select_from(t.stages).where(
            S.job_id == job_id, S.status == StageStatus.RUNNING)).scalar()
        if running:
            tx.conn.execute(t.jobs.update().where(J.id == job_id).values(cancel_requested=True,
                                                                         version=J.version + 1))
            tx.touch(job_id)
            tx.cancelled.add(job_id)  # the node running it hears of it (LISTEN/NOTIFY in a cluster)
            return JobStatus.RUNNING
        _cancel_now(tx, job_id, now, release)
        return JobStatus.CANCELLED


def acknowledge_cancel(store: Store, claim: ClaimedStage, *, release: ReleasePolicy, now: float) -> bool:
    """The worker stopped a stage because its job was cancelled. False if the lease was lost meanwhile."""
    with store.write() as tx:
        _lock_job(tx, claim.stage.job_id)
        owned = tx.conn.execute(sa.select(S.id).where(S.id == claim.stage.id, S.lease_token == claim.lease_token,
                                                      S.status == StageStatus.RUNNING)).first()
        if owned is None:
            return False
        _cancel_now(tx, claim.stage.job_id, now, release)
    return True


def _cancel_now(tx: WriteTx, job_id: str, now: float, release: ReleasePolicy) -> None:
    tx.conn.execute(t.stages.update().where(
        S.job_id == job_id, S.status.in_([StageStatus.PENDING, StageStatus.QUEUED, StageStatus.RUNNING])
    ).values(status=StageStatus.CANCELLED, finished_at=now, lease_owner=None, lease_token=None,
             lease_expires_at=None))
    _finish_job(tx, job_id, JobStatus.CANCELLED, now, release, code=None, message=None)


# -- recovery ------------------------------------------------------------------------------------------------

def recover_lost_stages(store: Store, *, now: float, release: ReleasePolicy, all_running: bool = False,
                        max_interruptions: int = DEFAULT_MAX_INTERRUPTIONS) -> list[str]:
    """Requeue stages whose node stopped (its lease expired; or every running stage when the only node restarts).

    The node stopping is not the stage's doing, so its attempt is given back: ``max_attempts`` counts only what
    the stage may have caused (its worker dying, its model failing, a timeout). A stage interrupted more than
    ``max_interruptions`` times (perhaps it is what brings the node down) fails with WORKER_LOST. It keeps its
    place in the queue: it waited its turn already, and an interruption no longer costs it an attempt. Returns
    the ids of the jobs touched.
    """
    cond = S.status == StageStatus.RUNNING
    if not all_running:
        cond = sa.and_(cond, S.lease_expires_at < now)
    what = "the server restarted" if all_running else "the node running it stopped renewing its lease"
    touched: list[str] = []
    with store.write() as tx:
        # Two nodes reaping at once each take different stages (PostgreSQL); SQLite has one writer anyway.
        rows = tx.conn.execute(sa.select(S.id, S.job_id, S.model_id, S.interruptions, J.cancel_requested)
                               .join(t.jobs, J.id == S.job_id).where(cond)
                               .with_for_update(skip_locked=True, of=t.stages)).all()
        for r in rows:
            touched.append(r.job_id)
            interruptions = (r.interruptions or 0) + 1
            if r.cancel_requested:
                _cancel_now(tx, r.job_id, now, release)
            elif interruptions > max_interruptions:
                msg = (f"{what} while this stage ran, {interruptions} times (scheduler.max_interruptions "
                       f"{max_interruptions}): the stage may be what stops it")
                tx.conn.execute(t.stages.update().where(S.id == r.id).values(
                    status=StageStatus.FAILED, finished_at=now, lease_owner=None, lease_token=None,
                    lease_expires_at=None, interruptions=interruptions, error_code=ErrorCode.WORKER_LOST,
                    error_message=msg))
                _finish_job(tx, r.job_id, JobStatus.FAILED, now, release, code=ErrorCode.WORKER_LOST, message=msg)
            else:
                tx.conn.execute(t.stages.update().where(S.id == r.id).values(
                    status=StageStatus.QUEUED, progress=0.0, attempts=S.attempts - 1, interruptions=interruptions,
                    lease_owner=None, lease_token=None, lease_expires_at=None, error_code=None,
                    error_message=f"{what} while this stage ran; it runs again (no attempt counted)"))
                tx.conn.execute(t.jobs.update().where(J.id == r.job_id).values(version=J.version + 1))
                tx.queued.add(r.model_id)
            tx.touch(r.job_id)
    return touched


# -- retention -----------------------------------------------------------------------------------------------

def expire(store: Store, *, now: float) -> set[str]:
    """Drop outputs past their job's expires_at, uploads past theirs (leaving a tombstone) and expired
    Idempotency-Keys; returns hashes that may be unreferenced now. A waiting or running job keeps the blobs of its
    inputs (Retention.collect)."""
    released: set[str] = set()
    f = t.files.c
    with store.write() as tx:
        tx.conn.execute(t.idempotency_keys.delete().where(t.idempotency_keys.c.expires_at < now))
        expired_jobs = tx.conn.execute(sa.select(J.id).where(J.expires_at <= now)).scalars().all()
        if expired_jobs:
            released.update(tx.conn.execute(sa.select(t.outputs.c.sha256)
                                            .where(t.outputs.c.job_id.in_(expired_jobs))).scalars())
            tx.conn.execute(t.outputs.delete().where(t.outputs.c.job_id.in_(expired_jobs)))
            tx.conn.execute(t.jobs.update().where(J.id.in_(expired_jobs)).values(expires_at=None,
                                                                                 version=J.version + 1))
            for job_id in expired_jobs:
                tx.touch(job_id)
        stale = tx.conn.execute(sa.select(f.id, f.owner_id, f.sha256, f.expires_at).where(f.expires_at <= now)
                                .order_by(f.id).with_for_update()).all()
        if stale:
            released.update(r.sha256 for r in stale)
            tx.conn.execute(t.file_tombstones.insert(), [dict(id=r.id, owner_id=r.owner_id, expired_at=r.expires_at)
                                                         for r in stale])
            tx.conn.execute(t.files.delete().where(f.id.in_([r.id for r in stale])))
        tx.conn.execute(t.file_tombstones.delete().where(t.file_tombstones.c.expired_at < now - TOMBSTONE_SECONDS))
    return released


def _finish_job(tx: WriteTx, job_id: str, status: JobStatus, now: float, release: ReleasePolicy, *,
                code: str | None = None, message: str | None = None) -> None:
    values: dict[str, Any] = dict(status=status, finished_at=now, error_code=code, error_message=message,
                                  version=J.version + 1)
    if status == JobStatus.SUCCEEDED:
        values.update(progress=100.0, expires_at=now + release.keep_seconds)
    else:  # nothing of a failed or cancelled job is downloadable: what its stages stored goes now
        out = t.outputs.c
        tx.released.update(tx.conn.execute(sa.select(out.sha256).where(out.job_id == job_id)).scalars())
        tx.conn.execute(t.outputs.delete().where(out.job_id == job_id))
    tx.conn.execute(t.jobs.update().where(J.id == job_id).values(**values))
    tx.touch(job_id)
    # The webhooks that report this end commit with it, or not at all.
    outbox.enqueue_job_event(tx, job_id, FINAL_EVENTS[status], now)
    feature = tx.conn.execute(sa.select(J.feature).where(J.id == job_id)).scalar()
    tx.events.append(JobEvent("finished", job_id, feature, status, code))
    # The job no longer holds its inputs' blobs. An upload's stays while the upload lives; bytes sent inline, and an
    # upload deleted or expired while the job ran, go now unless something else references them.
    tx.released.update(tx.conn.execute(sa.select(t.job_inputs.c.sha256)
                                       .where(t.job_inputs.c.job_id == job_id)).scalars())


def _job_progress(weights: list[float], stage_index: int, fraction: float) -> float:
    total = sum(weights) or 1.0
    done = sum(weights[:stage_index]) + weights[stage_index] * fraction if stage_index < len(weights) else total
    return round(100.0 * done / total, 2)
