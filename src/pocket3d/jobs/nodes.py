"""The cluster's members as the store knows them: a row a gateway or worker, refreshed by its heartbeat.

A worker's ``state`` says what others plan with: its devices (budget, use, resident models, stages running),
the models it can host with what it measured of them, and whether it takes export stages. Gateways read it for
cluster-wide queue positions, ETAs and ``/system/devices``; workers read it to leave a stage to the node that
already holds its model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pocket3d.jobs import schema as t
from pocket3d.jobs.records import StageStatus
from pocket3d.jobs.store import Store

N = t.nodes.c
GATEWAY, WORKER = "gateway", "worker"


@dataclass(frozen=True)
class NodeRecord:
    id: str
    role: str
    host: str
    pid: int
    version: str
    started_at: float
    heartbeat_at: float
    draining: bool
    stopped_at: float | None
    state: Mapping[str, Any]

    @property
    def devices(self) -> list[dict[str, Any]]:
        return list(self.state.get("devices", ()))

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        """Model id -> what this node measured of it (run_seconds, load_seconds, peak_mb; None where not yet)."""
        return dict(self.state.get("models", {}))

    @property
    def takes_exports(self) -> bool:
        return bool(self.state.get("exports", False))


def heartbeat(store: Store, node_id: str, *, role: str, host: str, pid: int, version: str, started_at: float,
              draining: bool, state: Mapping[str, Any], now: float) -> None:
    """Write this node's row (made on the first beat, and again if another node pruned it as dead meanwhile)."""
    values = dict(role=role, host=host, pid=pid, version=version, started_at=started_at, heartbeat_at=now,
                  draining=draining, stopped_at=None, state=dict(state))
    with store.write() as tx:
        if tx.conn.execute(t.nodes.update().where(N.id == node_id).values(**values)).rowcount == 0:
            tx.conn.execute(t.nodes.insert().values(id=node_id, **values))


def leave(store: Store, node_id: str, *, now: float) -> None:
    """The node stopped cleanly: its row stays (``known``) until pruned."""
    with store.write() as tx:
        tx.conn.execute(t.nodes.update().where(N.id == node_id).values(stopped_at=now, heartbeat_at=now))


def known(store: Store, *, since: float, role: str | None = None) -> list[NodeRecord]:
    """Nodes heard from since ``since``: running, stopped or silent (a node is live while its row is not
    stopped and its heartbeat is recent)."""
    q = sa.select(t.nodes).where(N.heartbeat_at >= since)
    if role is not None:
        q = q.where(N.role == role)
    with store.read() as conn:
        rows = conn.execute(q.order_by(N.id)).mappings().all()
    return [NodeRecord(**{k: (bool(v) if k == "draining" else v) for k, v in r.items()}) for r in rows]


def prune(store: Store, *, older_than: float) -> int:
    """Forget nodes silent since ``older_than`` (they died without leaving); their stages' leases expire anyway."""
    with store.write() as tx:
        return tx.conn.execute(t.nodes.delete().where(N.heartbeat_at < older_than)).rowcount


def database_time(store: Store) -> float:
    """The database server's clock, in seconds since the epoch."""
    with store.read() as conn:
        return float(conn.execute(sa.select(sa.func.extract("epoch", sa.func.clock_timestamp()))).scalar_one())


def running_stages(store: Store) -> dict[tuple[str, str, str | None], int]:
    """(lease owner, device, model) -> how many stages run there now: what the nodes' heartbeats tell, but as it is
    this moment (a heartbeat is seconds old)."""
    s = t.stages.c
    with store.read() as conn:
        rows = conn.execute(sa.select(s.lease_owner, s.device, s.model_id, sa.func.count())
                            .where(s.status == StageStatus.RUNNING)
                            .group_by(s.lease_owner, s.device, s.model_id)).all()
    return {(owner, device, model): count for owner, device, model, count in rows}
