"""Compat sessions: a foreign client's unit of work that spans several jobs (ProtoScale-AI's "job" is an upload,
then its multi-angle views, then its 3D model). A record of what the client named, with a function per change;
the jobs themselves are ordinary jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pocket3d.jobs import schema as t
from pocket3d.jobs.store import Store, new_id

C = t.compat_sessions.c


@dataclass(frozen=True)
class Session:
    id: str
    flavour: str
    owner_id: str
    file_id: str
    options: dict[str, Any]
    jobs: dict[str, str]  # step -> job id
    step: str | None  # the step the client last asked for; None before any
    error: str | None  # why that step could not be submitted
    created_at: float
    expires_at: float


def _session(r: Any) -> Session:
    return Session(id=r.id, flavour=r.flavour, owner_id=r.owner_id, file_id=r.file_id, options=dict(r.options),
                   jobs=dict(r.jobs), step=r.step, error=r.error, created_at=r.created_at, expires_at=r.expires_at)


def create(store: Store, *, flavour: str, owner_id: str, file_id: str, options: dict[str, Any], now: float,
           expires_at: float, prefix: str = "cs") -> str:
    """A new session (and the expired ones of every owner go)."""
    session_id = new_id(prefix)
    with store.write() as tx:
        tx.conn.execute(t.compat_sessions.delete().where(C.expires_at <= now))
        tx.conn.execute(t.compat_sessions.insert().values(
            id=session_id, flavour=flavour, owner_id=owner_id, file_id=file_id, options=options, jobs={}, step=None,
            error=None, created_at=now, expires_at=expires_at))
    return session_id


def get(store: Store, session_id: str, *, flavour: str, now: float) -> Session | None:
    with store.read() as conn:
        r = conn.execute(sa.select(t.compat_sessions).where(C.id == session_id, C.flavour == flavour,
                                                           C.expires_at > now)).first()
    return _session(r) if r is not None else None


def list_for(store: Store, *, flavour: str, owner_id: str | None, now: float, limit: int = 100) -> list[Session]:
    """Newest first; ``owner_id`` None: every owner's."""
    query = sa.select(t.compat_sessions).where(C.flavour == flavour, C.expires_at > now)
    if owner_id is not None:
        query = query.where(C.owner_id == owner_id)
    with store.read() as conn:
        rows = conn.execute(query.order_by(C.id.desc()).limit(limit)).all()
    return [_session(r) for r in rows]


def start_step(store: Store, session_id: str, step: str, job_id: str) -> None:
    """The client asked for ``step``, and ``job_id`` does it."""
    with store.write() as tx:
        jobs = tx.conn.execute(sa.select(C.jobs).where(C.id == session_id).with_for_update()).scalar_one()
        tx.conn.execute(t.compat_sessions.update().where(C.id == session_id).values(
            jobs={**jobs, step: job_id}, step=step, error=None))


def refuse_step(store: Store, session_id: str, step: str, error: str) -> None:
    """The client asked for ``step`` and it could not be submitted: the session reads failed with ``error``."""
    with store.write() as tx:
        tx.conn.execute(t.compat_sessions.update().where(C.id == session_id).values(step=step, error=error))
