"""The webhook outbox: the endpoints owners register, the secret that signs a request's own ``webhook_url``, and
the deliveries with their attempts.

A delivery row is written in the transaction of the state change it reports (``enqueue_*`` take the
transition's :class:`WriteTx`), so a crash never loses one. :mod:`pocket3d.outbound.webhooks` sends them, at
least once: it claims due rows under a lease, and records each attempt and what comes next here. The retry
policy (when, how often, until when) is the sender's; this module only stores what it decided.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pocket3d.errors import ErrorCode, Pocket3DError, hide_server_paths
from pocket3d.jobs import schema as t
from pocket3d.jobs.records import (
    DEFAULT_REQUEST_EVENTS,
    ClaimedDelivery,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    JobStatus,
    WebhookEndpoint,
    WebhookEvent,
)
from pocket3d.jobs.store import Store, WriteTx, new_id

E = t.webhook_endpoints.c
D = t.webhook_deliveries.c
A = t.webhook_attempts.c
J = t.jobs.c
API = "/api/v1"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# -- endpoints -----------------------------------------------------------------------------------------------

def create_endpoint(store: Store, *, owner_id: str, url: str, events: Sequence[str], description: str | None,
                    max_endpoints: int, now: float) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its secret, which the owner sees this once."""
    endpoint = WebhookEndpoint(id=new_id("whk"), owner_id=owner_id, url=url, events=list(dict.fromkeys(events)),
                               description=description, created_at=now)
    secret = new_secret()
    with store.write() as tx:
        count = tx.conn.execute(sa.select(sa.func.count()).select_from(t.webhook_endpoints)
                                .where(E.owner_id == owner_id)).scalar() or 0
        if count >= max_endpoints:
            raise Pocket3DError(ErrorCode.WEBHOOK_LIMIT_REACHED,
                                f"you have {count} webhook endpoints, the most allowed (webhooks.max_endpoints); "
                                "delete one first", {"max_endpoints": max_endpoints},
                                hint="GET /api/v1/webhooks lists them; DELETE /api/v1/webhooks/{id} removes one")
        tx.conn.execute(t.webhook_endpoints.insert().values(
            id=endpoint.id, owner_id=owner_id, url=url, events=endpoint.events, description=description,
            secret=secret, created_at=now))
    return endpoint, secret


def list_endpoints(store: Store, owner_id: str) -> list[WebhookEndpoint]:
    with store.read() as conn:
        rows = conn.execute(sa.select(t.webhook_endpoints).where(E.owner_id == owner_id)
                            .order_by(E.created_at, E.id)).mappings().all()
    return [_endpoint(r) for r in rows]


def get_endpoint(store: Store, endpoint_id: str) -> WebhookEndpoint | None:
    with store.read() as conn:
        row = conn.execute(sa.select(t.webhook_endpoints).where(E.id == endpoint_id)).mappings().first()
    return _endpoint(row) if row else None


def delete_endpoint(store: Store, endpoint_id: str, *, now: float) -> bool:
    """Remove an endpoint; what was still to be sent to it is marked failed (nothing signs it any more)."""
    with store.write() as tx:
        gone = tx.conn.execute(t.webhook_endpoints.delete().where(E.id == endpoint_id)).rowcount
        if gone:
            tx.conn.execute(t.webhook_deliveries.update().where(
                D.endpoint_id == endpoint_id, D.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING]))
                .values(status=DeliveryStatus.FAILED, finished_at=now, next_attempt_at=None, lease_expires_at=None))
    return bool(gone)


def owner_secret(store: Store, owner_id: str, *, now: float) -> str:
    """The secret that signs deliveries to the owner's requests' ``webhook_url``; made on first use."""
    with store.write() as tx:
        return _owner_secret(tx, owner_id, now)


def _owner_secret(tx: WriteTx, owner_id: str, now: float) -> str:
    found = tx.conn.execute(sa.select(t.webhook_secrets.c.secret)
                            .where(t.webhook_secrets.c.owner_id == owner_id)).scalar()
    if found is None:
        found = new_secret()
        tx.conn.execute(t.webhook_secrets.insert().values(owner_id=owner_id, secret=found, created_at=now))
    return found


# -- enqueue (inside a transition) ---------------------------------------------------------------------------

def enqueue_job_event(tx: WriteTx, job_id: str, event: WebhookEvent, now: float, *,
                      min_interval: float | None = None) -> int:
    """Write a delivery of ``event`` to every URL that wants it: the job's own ``webhook_url`` (for the events
    its request named, by default the final ones) and the owner's endpoints subscribed to it. With
    ``min_interval``, nothing when the job had such an event less than that many seconds ago. Returns how many."""
    job = tx.conn.execute(sa.select(t.jobs).where(J.id == job_id)).mappings().first()
    if job is None:
        return 0
    targets = _targets(tx, job, event)
    if not targets:
        return 0
    if min_interval is not None:
        last = tx.conn.execute(sa.select(sa.func.max(D.created_at)).where(D.job_id == job_id,
                                                                          D.event == str(event))).scalar()
        if last is not None and now - last < min_interval:
            return 0
    payload = _payload(tx, job, event, now)
    for endpoint_id, url in targets:
        # A job.progress message not sent yet says less than this one: it goes no more.
        same_target = D.endpoint_id == endpoint_id if endpoint_id is not None else sa.and_(
            D.endpoint_id.is_(None), D.url == url)
        tx.conn.execute(t.webhook_deliveries.update().where(
            D.job_id == job_id, D.event == WebhookEvent.JOB_PROGRESS, D.status == DeliveryStatus.PENDING,
            same_target).values(status=DeliveryStatus.SUPERSEDED, finished_at=now, next_attempt_at=None))
        if endpoint_id is None:
            _owner_secret(tx, job["owner_id"], now)  # so the owner can verify what arrives
    tx.conn.execute(t.webhook_deliveries.insert(), [
        dict(id=new_id("msg"), job_id=job_id, owner_id=job["owner_id"], endpoint_id=endpoint_id, url=url,
             event=str(event), payload=payload, status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now,
             created_at=now) for endpoint_id, url in targets])
    tx.outbox += len(targets)
    return len(targets)


def enqueue_progress(tx: WriteTx, job_id: str, now: float, interval: float) -> int:
    """A job.progress message, unless nobody wants one or the job had one less than ``interval`` seconds ago."""
    return enqueue_job_event(tx, job_id, WebhookEvent.JOB_PROGRESS, now, min_interval=interval)


def _targets(tx: WriteTx, job: Any, event: WebhookEvent) -> list[tuple[str | None, str]]:
    targets: list[tuple[str | None, str]] = []
    request = job["request"] or {}
    if request.get("webhook_url"):
        wanted = request.get("webhook_events") or [str(e) for e in DEFAULT_REQUEST_EVENTS]
        if str(event) in wanted:
            targets.append((None, request["webhook_url"]))
    for endpoint_id, url, events in tx.conn.execute(sa.select(E.id, E.url, E.events)
                                                    .where(E.owner_id == job["owner_id"]).order_by(E.id)):
        if str(event) in (events or []):
            targets.append((endpoint_id, url))
    return targets


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _payload(tx: WriteTx, job: Any, event: WebhookEvent, now: float) -> dict[str, Any]:
    """The message, in the Standard Webhooks shape (type, timestamp, data); data names fields as the job view
    of the API does."""
    outputs = []
    if job["status"] == JobStatus.SUCCEEDED:
        o = t.outputs.c
        for r in tx.conn.execute(sa.select(o.name, o.format, o.size, o.sha256, o.media_type)
                                 .where(o.job_id == job["id"], o.public == sa.true())
                                 .order_by(o.stage_idx, o.name)).mappings():
            outputs.append({**r, "url": f"{API}/jobs/{job['id']}/outputs/{r['name']}"})
    # The message leaves the server for a receiver the API would not show server paths to (admins read them there).
    error = {"code": job["error_code"], "message": hide_server_paths(job["error_message"] or "")} \
        if job["error_code"] else None
    data = {"job_id": job["id"], "status": job["status"], "feature": job["feature"], "model": job["model_id"],
            "progress": job["progress"], "version": job["version"], "error": error, "outputs": outputs,
            "created_at": _iso(job["created_at"]), "started_at": _iso(job["started_at"]),
            "finished_at": _iso(job["finished_at"]),
            "links": {"self": f"{API}/jobs/{job['id']}", "events": f"{API}/jobs/{job['id']}/events"}}
    return {"type": str(event), "timestamp": _iso(now), "data": data}


# -- the sender's transitions --------------------------------------------------------------------------------

def claim_due(store: Store, *, limit: int, lease_seconds: float, now: float) -> list[ClaimedDelivery]:
    """Take up to ``limit`` deliveries whose attempt is due (or whose sender died mid-attempt: its lease ran out)."""
    due = sa.or_(sa.and_(D.status == DeliveryStatus.PENDING, D.next_attempt_at <= now),
                 sa.and_(D.status == DeliveryStatus.SENDING, D.lease_expires_at < now))
    pick = sa.select(t.webhook_deliveries).where(due).order_by(D.next_attempt_at, D.id).limit(limit)
    if not store.is_sqlite:
        pick = pick.with_for_update(skip_locked=True)
    claimed: list[ClaimedDelivery] = []
    with store.write() as tx:
        rows = tx.conn.execute(pick).mappings().all()
        if not rows:
            return []
        tx.conn.execute(t.webhook_deliveries.update().where(D.id.in_([r["id"] for r in rows]))
                        .values(status=DeliveryStatus.SENDING, lease_expires_at=now + lease_seconds))
        endpoint_ids = {r["endpoint_id"] for r in rows if r["endpoint_id"]}
        endpoint_secrets = dict(tx.conn.execute(sa.select(E.id, E.secret).where(E.id.in_(endpoint_ids))).all()) \
            if endpoint_ids else {}
        for r in rows:
            secret = endpoint_secrets.get(r["endpoint_id"]) if r["endpoint_id"] else \
                _owner_secret(tx, r["owner_id"], now)
            claimed.append(ClaimedDelivery(_delivery(r), secret))
    return claimed


def record_attempt(store: Store, delivery_id: str, *, started_at: float, seconds: float, status_code: int | None,
                   error: str | None, succeeded: bool, next_attempt_at: float | None, now: float) -> DeliveryStatus:
    """Store one attempt and what follows: done, another attempt at ``next_attempt_at``, or (None) given up."""
    if succeeded:
        status, values = DeliveryStatus.SUCCEEDED, dict(finished_at=now, next_attempt_at=None)
    elif next_attempt_at is not None:
        status, values = DeliveryStatus.PENDING, dict(next_attempt_at=next_attempt_at)
    else:
        status, values = DeliveryStatus.FAILED, dict(finished_at=now, next_attempt_at=None)
    with store.write() as tx:
        tx.conn.execute(t.webhook_attempts.insert().values(delivery_id=delivery_id, started_at=started_at,
                                                           seconds=seconds, status_code=status_code, error=error))
        tx.conn.execute(t.webhook_deliveries.update().where(D.id == delivery_id, D.status == DeliveryStatus.SENDING)
                        .values(status=status, attempts=D.attempts + 1, lease_expires_at=None, **values))
    return status


def abandon(store: Store, delivery_id: str, *, now: float) -> None:
    """Give up a delivery without an attempt (nothing can sign it: its endpoint is gone)."""
    with store.write() as tx:
        tx.conn.execute(t.webhook_deliveries.update().where(D.id == delivery_id, D.status == DeliveryStatus.SENDING)
                        .values(status=DeliveryStatus.FAILED, finished_at=now, next_attempt_at=None,
                                lease_expires_at=None))


def release_all_sending(store: Store, *, now: float) -> int:
    """The only sender on this store restarts: whatever it had in flight is due again now."""
    with store.write() as tx:
        n = tx.conn.execute(t.webhook_deliveries.update().where(D.status == DeliveryStatus.SENDING)
                            .values(status=DeliveryStatus.PENDING, next_attempt_at=now,
                                    lease_expires_at=None)).rowcount
        tx.outbox += n
    return n


def next_due(store: Store) -> float | None:
    """When the next pending delivery is due (or a lease runs out); None when nothing is waiting."""
    with store.read() as conn:
        pending = conn.execute(sa.select(sa.func.min(D.next_attempt_at))
                               .where(D.status == DeliveryStatus.PENDING)).scalar()
        leased = conn.execute(sa.select(sa.func.min(D.lease_expires_at))
                              .where(D.status == DeliveryStatus.SENDING)).scalar()
    found = [x for x in (pending, leased) if x is not None]
    return min(found) if found else None


# -- reads ---------------------------------------------------------------------------------------------------

def deliveries_of_job(store: Store, job_id: str) -> list[Delivery]:
    with store.read() as conn:
        rows = conn.execute(sa.select(t.webhook_deliveries).where(D.job_id == job_id)
                            .order_by(D.created_at, D.id)).mappings().all()
        ids = [r["id"] for r in rows]
        history: dict[str, list[DeliveryAttempt]] = {i: [] for i in ids}
        if ids:
            for a in conn.execute(sa.select(t.webhook_attempts).where(A.delivery_id.in_(ids))
                                  .order_by(A.id)).mappings():
                history[a["delivery_id"]].append(DeliveryAttempt(a["started_at"], a["seconds"], a["status_code"],
                                                                 a["error"]))
    return [_delivery(r, history[r["id"]]) for r in rows]


def count_by_status(store: Store) -> dict[str, int]:
    with store.read() as conn:
        return {s: n for s, n in conn.execute(sa.select(D.status, sa.func.count()).group_by(D.status))}


def _endpoint(r: Any) -> WebhookEndpoint:
    return WebhookEndpoint(id=r["id"], owner_id=r["owner_id"], url=r["url"], events=list(r["events"] or []),
                           description=r["description"], created_at=r["created_at"])


def _delivery(r: Any, history: list[DeliveryAttempt] | None = None) -> Delivery:
    return Delivery(id=r["id"], job_id=r["job_id"], owner_id=r["owner_id"], endpoint_id=r["endpoint_id"],
                    url=r["url"], event=r["event"], payload=r["payload"], status=DeliveryStatus(r["status"]),
                    attempts=r["attempts"], next_attempt_at=r["next_attempt_at"], created_at=r["created_at"],
                    finished_at=r["finished_at"], history=history or [])
