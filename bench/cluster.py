"""Cluster mode's coordination cost: 1, 2 and 4 workers (`pocket3d worker`, each a process with one virtual device
of two slots) behind one gateway (`pocket3d serve --role gateway`), on a real PostgreSQL and a real S3 store
(SeaweedFS), all on loopback.

The jobs are text -> mesh on the test model ``timed`` (tests/support/models-cluster.yaml: it holds memory while
loaded and sleeps the seconds a job asks for), then pocket3d's export stage. The model's fixed time dominates on
purpose: this machine has 2 cores for every process of every cluster size, so what is measured is how well the
cluster keeps its slots busy (claims, notices, leases), not how fast a model computes. Per cluster size:

- throughput: jobs a minute from the first submit to the last job's end, ``--rounds`` jobs per slot, all
  submitted at once through the gateway; speedup against 1 worker (goals: >= 1.9x at 2, >= 3.6x at 4);
- claim latency (p50/p99): how long a model stage that is ready waits while the cluster has a free slot: its
  start minus the later of its queueing and the moment the cluster last went below full (stages table times);
- export wait (p50): queueing to start of the export stage, which any worker with a CPU takes;
- database statements (pg_stat_statements, top-level: each one round trip): per stage during the run, and per
  second while the cluster idles (heartbeats, lease renewals, queue reads), by statement; the most connections
  the cluster held; so docs/scaling.md can extrapolate.

    .venv/bin/python bench/cluster.py [--workers 1 2 4] [--stage-seconds 3] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from cluster import Cluster, ClusterProcess  # noqa: E402
from postgres import TempPostgres, create_database  # noqa: E402
from seaweedfs import TempSeaweedFS  # noqa: E402

CONFIG = ROOT / "bench" / "cluster-system.yaml"
SLOTS_PER_WORKER = 2  # scheduler.concurrency in CONFIG: stages at once on a worker's one virtual device
GOALS = {2: 1.9, 4: 3.6}
MONITOR = "bench"  # the role this script reads the database as, so its own statements are left out of the counts


def submit(gateway: ClusterProcess, client: httpx.Client, seconds: float, steps: int = 3) -> str:
    r = client.post(f"{gateway.url}/api/v1/mesh/generate",
                    json={"text_prompt": "a crate", "parameters": {"seconds": seconds, "steps": steps}})
    r.raise_for_status()
    return r.json()["job_id"]


def wait_final(monitor: sa.Engine, job_ids: list[str], timeout: float) -> int:
    """Wait for the jobs to succeed; returns the most connections the cluster held to its database meanwhile."""
    deadline = time.monotonic() + timeout
    connections = 0
    with monitor.connect() as conn:
        while True:
            connections = max(connections, conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename <> :me"),
                {"me": MONITOR}).scalar())
            done = conn.execute(sa.text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status IN "
                                        "('succeeded', 'failed', 'cancelled')"), {"ids": job_ids}).scalar()
            conn.commit()
            if done == len(job_ids):
                failed = conn.execute(sa.text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status <> "
                                              "'succeeded'"), {"ids": job_ids}).scalar()
                if failed:
                    raise RuntimeError(f"{failed} of {len(job_ids)} jobs did not succeed")
                return connections
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(job_ids) - done} job(s) not final after {timeout} s")
            time.sleep(0.25)


class Statements:
    """Statements the cluster's processes ran on its database (pg_stat_statements), since ``reset``."""

    def __init__(self, admin: sa.Engine, database: str):
        self.admin, self.database = admin, database

    def reset(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_statements_reset()"))

    def read(self) -> dict[str, float]:
        with self.admin.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT s.query, s.calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                "JOIN pg_roles r ON r.oid = s.userid WHERE d.datname = :db AND r.rolname <> :me"),
                {"db": self.database, "me": MONITOR}).all()
        total = sum(calls for _, calls in rows)
        notices = sum(calls * query.count("pg_notify") for query, calls in rows)
        claims = sum(calls for query, calls in rows if "SKIP LOCKED" in query.upper())
        by_query: dict[str, int] = {}
        for query, calls in rows:
            label = " ".join(query.split())[:100]
            by_query[label] = by_query.get(label, 0) + calls
        return {"statements": total, "notices": notices, "claims": claims, "by_query": by_query}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def claim_latencies(stages: list[sa.Row], capacity: int) -> list[float]:
    """For each model stage: its start less the later of its queueing and the last time before it that the
    cluster went from full (every slot running a stage) to below full: how long it waited while a slot was free."""
    events = sorted([(s.started_at, 1, s.id) for s in stages] + [(s.finished_at, -1, s.id) for s in stages])
    latencies = []
    for s in stages:
        running, full, free_since = 0, False, float("-inf")
        for at, delta, stage_id in events:
            if at >= s.started_at:
                break
            if stage_id == s.id:
                continue
            running += delta
            if running >= capacity:
                full = True
            elif full:
                full, free_since = False, at
        latencies.append(0.0 if full else max(0.0, s.started_at - max(s.queued_at, free_since)))
    return latencies


def run(n: int, pg: TempPostgres, s3: TempSeaweedFS, root: Path, args: argparse.Namespace) -> dict:
    name = f"bench_cluster_{n}"
    url = create_database(pg.url, name)
    cluster = Cluster(root / f"workers-{n}", url, s3, prefix=f"bench-{uuid.uuid4().hex[:8]}/", config=CONFIG)
    cluster.migrate()
    gateway = cluster.gateway("gateway")
    workers = [cluster.worker(f"worker-{i}", env={"POCKET3D_GPU__VIRTUAL_DEVICES":
                                                   json.dumps([{"id": f"slot{i}", "memory": 2000}])})
               for i in range(1, n + 1)]
    monitor = sa.create_engine(url.replace("//pocket3d@", f"//{MONITOR}@"))
    admin = sa.create_engine(pg.url.replace("//pocket3d@", f"//{MONITOR}@"), isolation_level="AUTOCOMMIT")
    statements = Statements(admin, name)
    try:
        starting = [threading.Thread(target=p.start, kwargs={"timeout": 120}) for p in (gateway, *workers)]
        for th in starting:
            th.start()
        for th in starting:
            th.join()
        if not all(p.alive for p in (gateway, *workers)):
            raise RuntimeError(cluster.logs())
        capacity = SLOTS_PER_WORKER * n
        with httpx.Client(timeout=60) as client:
            # warm-up: every worker's device worker and exporter started, the model loaded somewhere
            wait_final(monitor, [submit(gateway, client, 0.3) for _ in range(capacity)], timeout=120)
            time.sleep(1.0)
            statements.reset()
            time.sleep(args.idle_seconds)
            idle = statements.read()

            statements.reset()
            count = args.rounds * capacity
            jobs = [submit(gateway, client, args.stage_seconds) for _ in range(count)]
            connections = wait_final(monitor, jobs, timeout=count * args.stage_seconds + 300)
            used = statements.read()
        with monitor.connect() as conn:
            span = conn.execute(sa.text("SELECT max(finished_at) - min(created_at) FROM jobs WHERE id = ANY(:ids)"),
                                {"ids": jobs}).scalar()
            stages = conn.execute(sa.text("SELECT id, name, model_id, queued_at, started_at, finished_at FROM stages "
                                          "WHERE job_id = ANY(:ids)"), {"ids": jobs}).all()
            outputs = conn.execute(sa.text("SELECT count(*) FROM outputs WHERE job_id = ANY(:ids)"),
                                   {"ids": jobs}).scalar()
    finally:
        cluster.stop()
        monitor.dispose()
        admin.dispose()
    model_stages = [s for s in stages if s.model_id is not None]
    exports = [s for s in stages if s.model_id is None]
    latencies = claim_latencies(model_stages, capacity)
    idle_per_second = idle["statements"] / args.idle_seconds
    return {
        "workers": n, "jobs": count, "seconds": span, "per_minute": count / span * 60,
        "claim_p50": percentile(latencies, 0.5), "claim_p99": percentile(latencies, 0.99),
        "export_wait_p50": percentile([s.started_at - s.queued_at for s in exports], 0.5),
        "statements_per_stage": used["statements"] / len(stages),
        "beyond_idle_per_stage": (used["statements"] - idle_per_second * span) / len(stages),
        "notices_per_stage": used["notices"] / len(stages), "claims_per_stage": used["claims"] / len(stages),
        "idle_per_second": idle_per_second, "idle_per_process_second": idle_per_second / (n + 1),
        "connections": connections, "outputs_per_job": outputs / count,
        "by_query": {q: calls / len(stages) for q, calls in used["by_query"].items()},
        "idle_by_query": {q: calls / args.idle_seconds for q, calls in idle["by_query"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--stage-seconds", type=float, default=3.0, help="the model's fixed time a job")
    parser.add_argument("--rounds", type=int, default=6, help="jobs per slot of the cluster")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="how long the idle cluster is counted")
    parser.add_argument("--top", type=int, default=15, help="statements listed in the breakdowns")
    args = parser.parse_args()

    # track=top: the statements clients send (each a round trip), not those run inside them (triggers, checks)
    pg = TempPostgres("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=top",
                      "max_connections=300")
    pg.url = pg.start()
    s3 = TempSeaweedFS().start()
    results = []
    try:
        with sa.create_engine(pg.url, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(sa.text(f"CREATE ROLE {MONITOR} LOGIN SUPERUSER"))
            conn.execute(sa.text("CREATE EXTENSION pg_stat_statements"))
        with tempfile.TemporaryDirectory(prefix="p3d-bench-cluster-") as tmp:
            for n in args.workers:
                print(f"{n} worker(s) ...", file=sys.stderr, flush=True)
                results.append(run(n, pg, s3, Path(tmp), args))
    finally:
        s3.stop()
        pg.stop()

    base = next((r["per_minute"] for r in results if r["workers"] == 1), None)
    print(f"\nbench/cluster.py: {args.stage_seconds:g} s model stages + export, {args.rounds} jobs per slot, "
          f"{SLOTS_PER_WORKER} slots per worker, one gateway; PostgreSQL and SeaweedFS on loopback\n")
    print("| workers | jobs | seconds | jobs/min | speedup | goal | claim p50 | claim p99 | export wait p50 "
          "| statements/stage | beyond idle/stage | NOTIFYs/stage | claim queries/stage | idle statements/s "
          "(per process) | connections (per process) | outputs/job |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        speedup = r["per_minute"] / base if base else float("nan")
        goal = GOALS.get(r["workers"])
        verdict = "" if goal is None else f">= {goal}x {'met' if speedup >= goal else 'MISSED'}"
        print(f"| {r['workers']} | {r['jobs']} | {r['seconds']:.1f} | {r['per_minute']:.1f} | {speedup:.2f}x "
              f"| {verdict} | {r['claim_p50'] * 1000:.0f} ms | {r['claim_p99'] * 1000:.0f} ms "
              f"| {r['export_wait_p50'] * 1000:.0f} ms | {r['statements_per_stage']:.1f} "
              f"| {r['beyond_idle_per_stage']:.1f} | {r['notices_per_stage']:.2f} | {r['claims_per_stage']:.2f} "
              f"| {r['idle_per_second']:.1f} ({r['idle_per_process_second']:.1f}) "
              f"| {r['connections']} ({r['connections'] / (r['workers'] + 1):.1f}) | {r['outputs_per_job']:.1f} |")
    ideal = 60 / (args.stage_seconds) * SLOTS_PER_WORKER
    print(f"\nideal: {ideal:.0f} jobs/min a worker (its {SLOTS_PER_WORKER} slots always busy with "
          f"{args.stage_seconds:g} s stages)")
    for key, what in (("by_query", "statements per stage during the run"),
                      ("idle_by_query", "statements per second while idle")):
        labels = sorted({q for r in results for q in r[key]}, key=lambda q: -results[-1][key].get(q, 0.0))
        print(f"\n{what}, by statement (the {args.top} most frequent at {results[-1]['workers']} workers)\n")
        print("| statement | " + " | ".join(f"{r['workers']} w" for r in results) + " |")
        print("|---|" + "---|" * len(results))
        for q in labels[:args.top]:
            print(f"| `{q}` | " + " | ".join(f"{r[key].get(q, 0.0):.2f}" for r in results) + " |")


if __name__ == "__main__":
    main()
