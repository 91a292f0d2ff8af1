"""Cluster mode, proven with its processes: two gateways (`pocket3d serve --role gateway`) and two workers
(`pocket3d worker`) on loopback, sharing a real PostgreSQL (a server of this module's own, so it can be restarted)
and a real S3 store (SeaweedFS). Jobs submitted through either gateway run on either worker; a worker killed,
paused or stopped mid-stage, a gateway killed mid-submit and PostgreSQL restarted mid-run lose no job and run no
stage's result twice.

The test model (``timed``, tests/support/models-cluster.yaml) holds memory while loaded and takes the seconds a job
asks for, reporting ``steps`` progress steps; every worker has one virtual device with two slots."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import sqlalchemy as sa
import yaml
from cluster import Cluster, ClusterProcess
from postgres import TempPostgres, create_database

from pocket3d.jobs import schema as t

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def pg() -> Iterator[TempPostgres]:
    if not TempPostgres.available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing; scripts/ensure-postgres.sh installs them")
        pytest.skip("PostgreSQL server binaries are missing (scripts/ensure-postgres.sh installs them)")
    server = TempPostgres()
    server.url = server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(pg: TempPostgres, s3_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    url = create_database(pg.url, "cluster")
    c = Cluster(tmp_path_factory.mktemp("cluster"), url, s3_server, prefix=f"cluster-{uuid.uuid4().hex[:8]}/")
    c.migrate()
    c.engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        starting = [c.gateway("gateway-a"), c.gateway("gateway-b"), c.worker("worker-1"), c.worker("worker-2")]
        threads = [threading.Thread(target=p.start) for p in starting]  # four imports at once: half the wait
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for p in starting:
            assert p.alive, c.logs()
        yield c
    finally:
        c.stop()
        c.engine.dispose()


@pytest.fixture
def healthy(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with all four processes running (a test that kills one starts it again after)."""
    for p in cluster.processes.values():
        if not p.alive:
            p.start()
    marks = {name: len(p.log()) for name, p in cluster.processes.items()}
    yield cluster
    for name, p in cluster.processes.items():  # shown when the test fails: what each process said meanwhile
        print(f"===== {name} =====\n{p.log()[marks[name]:][-5000:]}")
    for p in cluster.processes.values():
        if not p.alive:
            p.start()


def submit(gateway: ClusterProcess, seconds: float = 0.3, steps: int = 3, prompt: str = "a crate",
           parameters: dict | None = None, **kw) -> str:
    """Submit a job of the ``timed`` test model; ``parameters``: more of its parameters."""
    sent = {"seconds": seconds, "steps": steps, **(parameters or {})}
    with gateway.client() as c:
        r = c.post("/mesh/generate", json={"text_prompt": prompt, "parameters": sent}, **kw)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def job(gateway: ClusterProcess, job_id: str) -> dict:
    with gateway.client() as c:
        return c.get(f"/jobs/{job_id}").json()


def wait_final(gateway: ClusterProcess, job_ids: list[str], timeout: float = 90) -> dict[str, dict]:
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    with gateway.client() as c:
        while len(done) < len(job_ids):
            assert time.monotonic() < deadline, f"{len(job_ids) - len(done)} job(s) not final in {timeout} s"
            for job_id in job_ids:
                if job_id not in done and (view := c.get(f"/jobs/{job_id}").json())["status"] in FINAL:
                    done[job_id] = view
            time.sleep(0.2)
    return done


def running_on(cluster: Cluster, job_id: str, timeout: float = 30) -> ClusterProcess:
    """The worker process whose node holds the lease of the job's model stage, once it runs."""
    deadline = time.monotonic() + timeout
    s, n = t.stages.c, t.nodes.c
    while time.monotonic() < deadline:
        with cluster.engine.connect() as conn:
            pid = conn.execute(sa.select(n.pid).join(t.stages, s.lease_owner == n.id)
                               .where(s.job_id == job_id, s.name == "generate_mesh", s.status == "running")).scalar()
        for p in cluster.processes.values():
            if pid is not None and p.proc is not None and p.proc.pid == pid:
                return p
        time.sleep(0.1)
    raise AssertionError(f"job {job_id}'s stage did not start in {timeout} s")


def outputs_of(cluster: Cluster, job_id: str) -> list[tuple[str, str]]:
    with cluster.engine.connect() as conn:
        return sorted(conn.execute(sa.select(t.outputs.c.name, t.outputs.c.sha256)
                                   .where(t.outputs.c.job_id == job_id)).all())


def read_events(gateway: ClusterProcess, job_id: str, into: list[dict], last_event_id: str | None = None) -> None:
    """Read the job's SSE stream on this gateway to its end; each event lands in ``into`` as {event, id, retry,
    data}."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with gateway.client(timeout=90) as c, c.stream("GET", f"/jobs/{job_id}/events", headers=headers) as r:
        fields: dict = {"event": "message", "data": []}
        for line in r.iter_lines():
            name, _, value = line.partition(":")
            if name in ("event", "id", "retry"):
                fields[name] = value.strip()
            elif name == "data":
                fields["data"].append(value.strip())
            elif line == "" and fields["data"]:
                into.append({**fields, "data": json.loads("\n".join(fields["data"]))})
                fields = {"event": "message", "data": []}


def transitions_of(events: list[dict]) -> list[tuple[str, str | None]]:
    """The (status, stage) a stream went through, each once, in order."""
    states = [(e["data"]["status"], e["data"]["current_stage"]) for e in events if e["event"] != "reconnect"]
    return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]


def test_forty_jobs_through_two_gateways_run_on_both_workers_and_every_gateway_sees_every_event(
        healthy: Cluster, s3_server) -> None:
    a, b = healthy.processes["gateway-a"], healthy.processes["gateway-b"]
    followed = submit(a, seconds=1.0, steps=5)  # through A, followed on both gateways
    on_a: list[dict] = []
    on_b: list[dict] = []
    readers = [threading.Thread(target=read_events, args=(a, followed, on_a)),
               threading.Thread(target=read_events, args=(b, followed, on_b))]
    for th in readers:
        th.start()
    jobs = [submit((a, b)[i % 2], seconds=0.2, prompt=f"crate {i}") for i in range(39)]
    for th in readers:
        th.join(90)
    done = wait_final(b, [followed, *jobs])
    assert {v["status"] for v in done.values()} == {"succeeded"}, [v for v in done.values()
                                                                   if v["status"] != "succeeded"]

    # gateway B's stream of a job submitted through A shows every state it went through, and its progress
    assert on_b and on_b[-1]["data"]["status"] == "succeeded"
    assert transitions_of(on_b) == transitions_of(on_a)
    assert {("running", "generate_mesh"), ("running", "export")} <= set(transitions_of(on_b))
    assert sum(1 for e in on_b if e["event"] == "progress") >= 2, on_b
    ids = [int(e["id"]) for e in on_b]
    assert ids == sorted(set(ids)), "each event once, in the job's order"
    for worker in (healthy.processes["worker-1"], healthy.processes["worker-2"]):
        assert " done on slot " in worker.log(), f"{worker.name} ran no stage"
    for gateway in (a, b):  # the exports ran on the workers: a gateway starts no device worker, not even for those
        assert not psutil.Process(gateway.proc.pid).children(recursive=True), f"{gateway.name} runs a process"

    # every artifact is in the bucket, and either gateway serves the same bytes
    in_bucket = {key.rsplit("/", 1)[-1] for key in s3_server.keys(healthy.prefix)}
    for job_id in (followed, *jobs[:6]):
        view = done[job_id]
        assert {o["sha256"] for o in view["outputs"]} <= in_bucket
        for output in view["outputs"]:
            with a.client() as ca, b.client() as cb:
                from_a = ca.get(f"/jobs/{job_id}/outputs/{output['name']}")
                from_b = cb.get(f"/jobs/{job_id}/outputs/{output['name']}")
            assert from_a.status_code == from_b.status_code == 200
            assert from_a.content == from_b.content
            assert hashlib.sha256(from_a.content).hexdigest() == output["sha256"]


def test_queue_positions_and_etas_are_cluster_wide(healthy: Cluster, tmp_path: Path) -> None:
    a, b = healthy.processes["gateway-a"], healthy.processes["gateway-b"]
    measured = [submit(a, seconds=0.2, prompt="measured") for _ in range(2)]
    wait_final(a, measured)
    # four slots in the cluster (two workers, two each), held by four jobs: the queue behind them stands still
    # while it is read, one job at a time, through either gateway
    release = tmp_path / "release"
    holding = [submit(a, seconds=0.0, steps=1, prompt=f"holding {i}", parameters={"hold_until": str(release)})
               for i in range(4)]
    try:
        deadline = time.monotonic() + 30
        while sum(job(b, j)["status"] == "running" for j in holding) < 4:
            assert time.monotonic() < deadline, [job(b, j) for j in holding]
            time.sleep(0.1)
        jobs = [submit((a, b)[i % 2], seconds=0.2, prompt=f"queued {i}") for i in range(8)]
        deadline = time.monotonic() + 30
        while True:  # until every gateway's view of the queue (read at most every second) holds the eight
            views = [job(b, j) for j in jobs]
            if all(v["queue_position"] is not None and v["eta_seconds"] is not None for v in views):
                break
            assert time.monotonic() < deadline, views
            time.sleep(0.2)
        assert {v["status"] for v in views} == {"queued"}
        assert [v["queue_position"] for v in views] == list(range(1, 9)), "submission order, once each"
        etas = [v["eta_seconds"] for v in views]
        assert etas == sorted(etas) and etas[-1] > etas[0], "the later in the queue, the later the end"
        assert job(a, jobs[-1])["queue_position"] == 8  # the other gateway knows the place too
    finally:
        release.touch()
    wait_final(a, [*holding, *jobs])


def test_a_cancel_through_a_gateway_stops_the_stage_on_its_worker(healthy: Cluster) -> None:
    a, b = healthy.processes["gateway-a"], healthy.processes["gateway-b"]
    job_id = submit(a, seconds=30, steps=1)  # no progress report before the end: only the cancel notice stops it
    running_on(healthy, job_id)
    asked = time.monotonic()
    with b.client() as c:
        assert c.post(f"/jobs/{job_id}/cancel").status_code == 200
    assert wait_final(a, [job_id], timeout=20)[job_id]["status"] == "cancelled"
    assert time.monotonic() - asked < 15, "stopped within the cancel grace, not at the model's end"


def test_a_killed_worker_s_stage_is_taken_over_after_its_lease_and_runs_once(healthy: Cluster) -> None:
    a = healthy.processes["gateway-a"]
    job_id = submit(a, seconds=4.0, steps=8)
    victim = running_on(healthy, job_id)
    victim.kill()  # SIGKILL to the node and its device workers: the machine died
    view = wait_final(a, [job_id], timeout=60)[job_id]
    assert view["status"] == "succeeded", view
    stage = view["stages"][0]
    assert stage["attempts"] == 1, "losing its node cost the stage no attempt"
    assert sorted(o["name"] for o in view["outputs"]) == sorted({o["name"] for o in view["outputs"]})
    assert len(outputs_of(healthy, job_id)) == len(view["outputs"]) + 1  # the model's mesh (not public) and these


def test_a_paused_worker_s_late_report_is_refused(healthy: Cluster) -> None:
    a = healthy.processes["gateway-a"]
    job_id = submit(a, seconds=3.0, steps=30)
    frozen = running_on(healthy, job_id)
    frozen.signal_group(signal.SIGSTOP)  # the node freezes (a long GC pause, a partition) with the stage in hand
    try:
        view = wait_final(a, [job_id], timeout=60)[job_id]  # another worker takes the stage over and finishes it
    finally:
        frozen.signal_group(signal.SIGCONT)
    assert view["status"] == "succeeded"
    stored = outputs_of(healthy, job_id)
    deadline = time.monotonic() + 20
    while "was refused: the stage's lease is no longer this node's" not in frozen.log() and \
            "lost the stage's lease" not in frozen.log():
        assert time.monotonic() < deadline, frozen.log()[-3000:]
        time.sleep(0.2)
    time.sleep(1.0)
    assert outputs_of(healthy, job_id) == stored, "the stale worker wrote nothing"
    after = job(a, job_id)
    assert after["status"] == "succeeded" and after["outputs"] == view["outputs"]
    assert frozen.alive
    again = submit(a, seconds=0.2)  # and it goes on working
    assert wait_final(a, [again])[again]["status"] == "succeeded"


def test_a_worker_whose_clock_runs_ahead_takes_no_stage_from_live_workers(healthy: Cluster) -> None:
    """Leases are reckoned in the database's time, not each machine's: a worker whose clock runs a minute ahead (the
    stand-in: tests/support/sitecustomize.py shifts its time.time) must not see the other workers' fresh leases as
    expired and take their stages over, cutting each run short."""
    fast = healthy.worker("worker-fast", env={"POCKET3D_TEST_CLOCK_SKEW": "60"})
    try:
        fast.start()
        a = healthy.processes["gateway-a"]
        jobs = [submit(a, seconds=2, steps=2, prompt=f"a clock {i}") for i in range(6)]
        done = wait_final(a, jobs, timeout=90)
        assert [v["status"] for v in done.values()] == ["succeeded"] * len(jobs)
        s = t.stages.c
        with healthy.engine.connect() as conn:
            interrupted = conn.execute(sa.select(sa.func.count()).where(s.job_id.in_(jobs), s.interruptions > 0)
                                       ).scalar()
        assert interrupted == 0, f"{interrupted} stage(s) taken over from a live worker"
    finally:
        fast.stop()
        del healthy.processes["worker-fast"]


def test_a_worker_does_not_claim_again_a_stage_it_still_runs(healthy: Cluster) -> None:
    """Another node requeued a stage whose lease had run out (its worker was cut off from the database past the
    lease, here the test process acting as that node) while the stage still runs on its worker. That worker holds
    the model loaded, so it is the one to claim the stage again: not while its first run is still on the device
    (the device refused a second run of the same stage, and the claim ended in an internal error)."""
    from pocket3d.jobs import transitions
    from pocket3d.jobs.store import Store

    a = healthy.processes["gateway-a"]
    job_id = submit(a, seconds=4, steps=8)
    runner = running_on(healthy, job_id)
    other = next(p for name, p in healthy.processes.items() if name.startswith("worker") and p is not runner)
    other.signal_group(signal.SIGSTOP)  # the runner is the only worker left to claim it again
    store = Store(healthy.database_url)
    try:
        assert transitions.recover_lost_stages(store, now=time.time() + 3600,
                                               release=transitions.ReleasePolicy(60)) == [job_id]
        assert wait_final(a, [job_id], timeout=60)[job_id]["status"] == "succeeded"
    finally:
        store.dispose()
        other.signal_group(signal.SIGCONT)
    s = t.stages.c
    with healthy.engine.connect() as conn:
        attempts = conn.execute(sa.select(s.attempts).where(s.job_id == job_id, s.name == "generate_mesh")).scalar()
    assert attempts == 1, f"the stage took {attempts} attempts: a run failed"


def test_sigterm_on_a_worker_lets_its_stages_finish_or_move(healthy: Cluster) -> None:
    a = healthy.processes["gateway-a"]
    first = submit(a, seconds=3.0, steps=6, prompt="finishes")
    leaving = running_on(healthy, first)
    leaving.terminate()  # drain_seconds 30: the running stage finishes here, new ones go to the other worker
    later = [submit(a, seconds=0.3, prompt=f"after {i}") for i in range(3)]
    assert leaving.wait(40) == 0
    done = wait_final(a, [first, *later])
    assert {v["status"] for v in done.values()} == {"succeeded"}
    assert done[first]["stages"][0]["attempts"] == 1
    assert "draining" in leaving.log()

    # a drain too short for the stages: they go back to the queue, uncounted, and the other worker runs them
    leaving.env = {**leaving.env, "POCKET3D_WORKER__DRAIN_SECONDS": "1"}
    try:
        leaving.start()
        jobs = [submit(a, seconds=5.0, steps=10, prompt=f"moves {i}") for i in range(4)]  # one a slot
        deadline = time.monotonic() + 30
        while not any(running_on(healthy, j) is leaving for j in jobs if job(a, j)["status"] == "running"):
            assert time.monotonic() < deadline, "no stage reached the second worker"
            time.sleep(0.2)
        leaving.terminate()
        assert leaving.wait(40) == 0
        done = wait_final(a, jobs, timeout=90)
        assert {v["status"] for v in done.values()} == {"succeeded"}, done
        assert {v["stages"][0]["attempts"] for v in done.values()} == {1}, "a drained stage costs no attempt"
        assert "given back to the queue" in leaving.log()
    finally:
        leaving.env.pop("POCKET3D_WORKER__DRAIN_SECONDS")


def test_a_stopping_gateway_ends_its_streams_with_a_reconnect_hint(healthy: Cluster) -> None:
    a, b = healthy.processes["gateway-a"], healthy.processes["gateway-b"]
    job_id = submit(b, seconds=4.0, steps=8)
    seen: list[dict] = []
    reader = threading.Thread(target=read_events, args=(a, job_id, seen))
    reader.start()
    deadline = time.monotonic() + 20
    while not seen:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    a.terminate()
    reader.join(20)
    assert not reader.is_alive()
    assert seen[-1]["event"] == "reconnect" and seen[-1]["retry"] == "1000", seen[-1]
    assert a.wait(20) == 0
    rest: list[dict] = []
    read_events(b, job_id, rest, last_event_id=seen[-2]["id"])  # the client goes on at another gateway
    assert rest[-1]["data"]["status"] == "succeeded"
    assert int(rest[0]["id"]) > int(seen[-2]["id"]), "only what it had not seen"


def test_a_gateway_that_cannot_listen_reads_jobs_from_the_database_and_is_not_ready(
        healthy: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway's LISTEN connection drops and cannot come back while its pool still serves (PostgreSQL refusing
    one more connection, say): it hears no other process's writes any more, so its job views come from the
    database rather than from a cache nothing refreshes, and /ready says why it should get no traffic. The refusal
    is the one stand-in: the listener's connect raises what a full server answers."""
    import psycopg
    from server import InProcessServer

    from pocket3d.config import load_settings
    from pocket3d.node import Node, Role

    for k, v in healthy.env.items():
        monkeypatch.setenv(k, v)
    node = Node(load_settings(healthy.config, data_dir=tmp_path / "deaf", models_file=healthy.models),
                role=Role.GATEWAY)
    a = healthy.processes["gateway-a"]
    with InProcessServer(node, manage_node=True) as deaf:
        assert node.listener.connected.wait(20)
        job_id = submit(a, seconds=30, steps=1)
        running_on(healthy, job_id)
        assert deaf.get(f"/jobs/{job_id}").json()["status"] == "running"  # read, and kept in its cache

        def refused() -> None:
            raise psycopg.OperationalError("FATAL: sorry, too many clients already")

        monkeypatch.setattr(node.listener, "_connect", refused)
        with healthy.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": node.listener._conn.info.backend_pid})
        deadline = time.monotonic() + 20
        while node.listener.connected.is_set():
            assert time.monotonic() < deadline, "the listener did not notice its connection was cut"
            time.sleep(0.05)
        with a.client() as c:
            assert c.post(f"/jobs/{job_id}/cancel").status_code == 200
        assert wait_final(a, [job_id], timeout=20)[job_id]["status"] == "cancelled"
        assert deaf.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
        ready = deaf.get("/system/ready")
        assert ready.status_code == 503 and "PostgreSQL LISTEN" in ready.text, ready.text


def test_a_sigterm_while_the_gateway_opens_a_stream_still_stops_it(tmp_path: Path) -> None:
    """A gateway ends its SSE streams from its SIGTERM handler, which Python runs in the event loop's thread
    between two bytecodes: maybe while that thread holds the event bus's lock to open or end a stream. Waiting for
    that lock there waits forever (the gateway hung on SIGTERM until it was killed)."""
    import subprocess
    import sys

    script = """
import asyncio, os, signal, sys
from pocket3d.jobs.events import EventBus
from pocket3d.jobs.snapshots import JobSnapshots
from pocket3d.jobs.store import Store

store = Store(sys.argv[1])
bus = EventBus(store, JobSnapshots(store, enabled=True))

async def main():
    bus.bind(asyncio.get_running_loop())
    signal.signal(signal.SIGTERM, lambda *_: bus.close())
    with bus._lock:  # a stream opening in the loop's thread when the signal comes
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between these bytecodes
            pass
    print("stopped")

asyncio.run(main())
"""
    try:
        done = subprocess.run([sys.executable, "-c", script, f"sqlite:///{tmp_path / 'jobs.db'}"],
                              capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("the SIGTERM handler waited for the event bus's lock: the process never stopped")
    assert done.returncode == 0 and "stopped" in done.stdout, done.stderr


def test_a_gateway_killed_while_clients_submit_through_both_loses_no_accepted_job(healthy: Cluster) -> None:
    a, b = healthy.processes["gateway-a"], healthy.processes["gateway-b"]
    accepted: dict[str, str] = {}  # the client's key -> the job a 2xx named
    lock = threading.Lock()
    stop = threading.Event()

    def client(first: ClusterProcess, other: ClusterProcess, name: str) -> None:
        n = 0
        while not stop.is_set():
            key = f"{name}-{n}"
            for gateway in (first, other, other):  # a failed submit is sent again, with its key, to the other
                try:
                    with gateway.client(timeout=10) as c:
                        r = c.post("/mesh/generate", headers={"Idempotency-Key": key},
                                   json={"text_prompt": key, "parameters": {"seconds": 0.1, "steps": 1}})
                except httpx.TransportError:
                    continue
                if r.status_code in (200, 202):
                    with lock:
                        accepted[key] = r.json()["job_id"]
                    break
            n += 1

    clients = [threading.Thread(target=client, args=(a, b, "via-a")),
               threading.Thread(target=client, args=(b, a, "via-b"))]
    for th in clients:
        th.start()
    time.sleep(2.0)
    a.kill()
    time.sleep(2.0)
    stop.set()
    for th in clients:
        th.join(30)
    assert len(accepted) > 5
    done = wait_final(b, list(set(accepted.values())))
    assert {v["status"] for v in done.values()} == {"succeeded"}
    with healthy.engine.connect() as conn:
        rows = conn.execute(sa.select(t.jobs.c.id, t.jobs.c.request["text_prompt"].as_string())
                            .where(t.jobs.c.request["text_prompt"].as_string().like("via-%"))).all()
    by_prompt: dict[str, list[str]] = {}
    for job_id, prompt in rows:
        by_prompt.setdefault(prompt, []).append(job_id)
    for key, job_id in accepted.items():
        assert by_prompt.get(key) == [job_id], f"{key}: accepted as {job_id}, stored as {by_prompt.get(key)}"


def test_a_postgres_restart_mid_run_loses_no_process_and_no_accepted_job(healthy: Cluster, pg: TempPostgres) -> None:
    a, b = healthy.processes["gateway-a"], healthy.processes["gateway-b"]
    jobs = [submit((a, b)[i % 2], seconds=2.0, steps=10, prompt=f"through a restart {i}") for i in range(6)]
    running_on(healthy, jobs[0])
    seen: list[dict] = []
    reader = threading.Thread(target=read_events, args=(b, jobs[-1], seen))
    reader.start()
    deadline = time.monotonic() + 20
    while not seen:  # the stream is open, and has sent the job as it was
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pg.restart()
    done = wait_final(a, jobs, timeout=120)
    assert {v["status"] for v in done.values()} == {"succeeded"}, done
    reader.join(30)
    assert seen and seen[-1]["data"]["status"] == "succeeded", "the stream open across the restart saw the end"
    for p in healthy.processes.values():
        assert p.alive, f"{p.name} exited:\n{p.log()[-3000:]}"
    after = submit(b, seconds=0.2)
    assert wait_final(a, [after])[after]["status"] == "succeeded"
    assert "listening for changes again" in b.log() or "reconnecting" in b.log()


def test_retention_on_one_node_leaves_a_blob_another_node_is_storing(pg: TempPostgres, s3_server, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Node A stores a blob and is about to commit the row that references it; node B's retention sweeps that blob
    meanwhile. With the blob held (a PostgreSQL advisory lock), B leaves it; without (a lock of A's process only,
    as before cluster mode), B deletes it under A's feet."""
    from pocket3d.jobs import transitions
    from pocket3d.jobs.records import NewFile
    from pocket3d.jobs.store import Store
    from pocket3d.node import Retention
    from pocket3d.storage.locks import BlobLock
    from pocket3d.storage.s3 import S3ArtifactStore

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    url = create_database(pg.url, "blobs")
    stores = {name: Store(url) for name in ("a", "b")}
    stores["a"].create_schema()
    blobs = {name: S3ArtifactStore(tmp_path / name, bucket=s3_server.bucket, prefix=f"blobs-{uuid.uuid4().hex[:8]}/",
                                   endpoint=s3_server.endpoint) for name in ("a", "b")}
    blobs["b"].prefix = blobs["a"].prefix
    sweeper = Retention(stores["b"], blobs["b"], BlobLock(stores["b"].engine))

    def upload(name: str, content: bytes) -> Path:
        path = blobs["a"].tmp / name
        path.write_bytes(content)
        return path

    try:
        with BlobLock(stores["a"].engine).writing(blobs["a"]) as writer:
            sha, size = writer.put(upload("held", b"a mesh being uploaded"))
            assert sweeper.collect({sha}) == 0 and blobs["b"].exists(sha), "held: left for a later sweep"
            now = time.time()
            transitions.register_file(stores["a"], NewFile(id="file_held", owner_id="o", sha256=sha, size=size,
                                                           media_type="model/gltf-binary", kind="mesh", format="glb",
                                                           filename=None), now=now, expires_at=now + 60)
        assert sweeper.collect({sha}) == 0 and blobs["b"].exists(sha), "referenced once its row committed"
        transitions.delete_file(stores["a"], "file_held")
        assert sweeper.collect({sha}) == 1 and not blobs["b"].exists(sha), "unreferenced and not held: deleted"

        with BlobLock(None).writing(blobs["a"]) as writer:  # held by A's process alone
            sha, _ = writer.put(upload("unheld", b"another mesh"))
            assert sweeper.collect({sha}) == 1 and not blobs["a"].exists(sha), "the race the advisory lock closes"
    finally:
        for store in stores.values():
            store.dispose()


def test_a_gateway_accepts_a_model_of_a_pool_scaled_to_zero_only_when_told(pg: TempPostgres, tmp_path: Path) -> None:
    """KEDA starts a GPU pool when its stages wait, so a gateway must accept a model that no worker has hosted yet
    when cluster.hosted_models names it (the Helm chart names its autoscaled pools' models); another model no
    worker hosts is refused with what to do."""
    from pocket3d.config import load_settings
    from pocket3d.jobs import nodes
    from pocket3d.jobs.store import Store
    from pocket3d.models.registry import Registry
    from pocket3d.scheduler.cluster import ClusterView

    models = tmp_path / "models.yaml"
    entry = {"class": "p3d_workermodels:AllocatingTestModel", "supported_inputs": ["text"],
             "supported_outputs": ["glb"]}
    models.write_text(yaml.safe_dump({"entry_points": False,
                                      "models": {"mesh_generation": {"timed": entry, "gpu_pool_model": entry}}}))
    store = Store(create_database(pg.url, "hosted"))
    try:
        store.create_schema()
        nodes.heartbeat(store, "cpu-worker-1", role=nodes.WORKER, host="h", pid=1, version="x", started_at=0,
                        draining=False, state={"models": {"timed": {}}, "devices": []}, now=time.time())
        registry = Registry.from_config(models)
        config = tmp_path / "system.yaml"
        for hosted, refused in (([], ["gpu_pool_model"]), (["gpu_pool_model"], []), (["*"], [])):
            config.write_text(yaml.safe_dump({"cluster": {"hosted_models": hosted}}))
            view = ClusterView(store, load_settings(config), registry)
            why = {m.spec.id: registry.unavailable_reasons(m, [], view.budget_of) for m in registry.all()}
            assert [m for m, reasons in why.items() if reasons] == refused, why
            if refused:
                assert "cluster.hosted_models" in why["gpu_pool_model"][0]
    finally:
        store.dispose()
