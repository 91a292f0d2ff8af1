"""The job store's state machine on a real SQLite file and a real PostgreSQL server: claims, leases, retries,
recovery, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import sqlalchemy as sa

from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import (
    EXPORT_STAGE,
    IdempotencyKey,
    JobInput,
    JobStatus,
    NewFile,
    NewJob,
    NewStage,
    OutputRecord,
    StageStatus,
    Store,
)
from pocket3d.jobs.records import StageWarning
from pocket3d.jobs import schema as t
from pocket3d.jobs import transitions as tr
from postgres import empty_database

KEEP = tr.ReleasePolicy(keep_seconds=60)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Store:
    """The same state machine on both engines the store supports, each a real server or file."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    else:
        s = Store(request.getfixturevalue("postgres_url"))
        empty_database(s.engine)
    s.create_schema()
    yield s
    s.dispose()


def new_job(model: str = "m", priority: int = 0, files=()) -> NewJob:
    return NewJob(owner_id="o", feature="mesh_generation", model_id=model, priority=priority,
                  stages=[NewStage("generate_mesh", model, weight=0.9), NewStage(EXPORT_STAGE, None, {"format": "glb"},
                                                                                 weight=0.1)],
                  request={}, inputs=[JobInput("image", file_id=f) for f in files])


def submit(store: Store, job: NewJob | None = None, now: float = 100.0, max_attempts: int = 3, **kw) -> str:
    return tr.submit(store, job or new_job(), queue_size=1000, max_attempts=max_attempts, now=now, **kw)


def claim(store: Store, models=("m",), worker="w1", now=101.0, lease=30.0):
    return tr.claim_next_stage(store, worker_id=worker, model_ids=list(models), include_export=True,
                               lease_seconds=lease, now=now)


def out(name: str, sha: str = "a" * 64) -> OutputRecord:
    return OutputRecord(name=name, stage_index=0, sha256=sha, size=1, media_type="x", format="glb", public=False)


def test_a_job_walks_through_its_stages(store) -> None:
    job_id = submit(store)
    assert claim(store, models=("other",)) is None, "a worker claims only stages of models it can host"
    c1 = claim(store)
    assert c1.stage.name == "generate_mesh" and c1.stage.attempts == 1
    assert tr.report_progress(store, c1, 0.5, now=102.0) is True
    job = store.get_job(job_id)
    assert job.status == JobStatus.RUNNING and job.progress == 45.0
    assert tr.complete_stage(store, c1, [out("generate_mesh.mesh.glb")], release=KEEP, now=103)
    c2 = claim(store, models=())
    assert c2.stage.name == EXPORT_STAGE
    assert store.get_job(job_id).progress == 90.0
    assert tr.complete_stage(store, c2, [out("model.glb", "b" * 64)], release=KEEP, now=104)
    job = store.get_job(job_id)
    assert job.status == JobStatus.SUCCEEDED and job.progress == 100 and job.expires_at == 164
    assert [o.name for o in job.outputs] == ["generate_mesh.mesh.glb", "model.glb"]
    assert claim(store) is None


def test_priority_then_age_decides_the_order(store) -> None:
    low = submit(store, new_job(priority=0), now=1)
    high = submit(store, new_job(priority=5), now=2)
    later = submit(store, new_job(priority=0), now=3)
    assert [claim(store).stage.job_id for _ in range(3)] == [high, low, later]


def test_concurrent_workers_never_claim_a_stage_twice(store) -> None:
    jobs = [submit(store) for _ in range(60)]
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (c := claim(store, worker=name)) is not None:
            with lock:
                claimed.append(c.stage.job_id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(claimed) == sorted(jobs)


def test_a_lost_lease_makes_the_old_worker_powerless(store) -> None:
    job_id = submit(store)
    old = claim(store, now=101, lease=5)
    assert tr.recover_lost_stages(store, now=110, release=KEEP) == [job_id]
    new = claim(store, worker="w2", now=111)
    assert new.stage.attempts == 1, "a lost node is not the stage's attempt"
    assert tr.report_progress(store, old, 0.9, now=112) is False
    assert tr.complete_stage(store, old, [out("x")], release=KEEP, now=112) is False
    assert tr.fail_stage(store, old, code="MODEL_ERROR", message="late", retry=False, release=KEEP, now=112) is False
    assert store.get_job(job_id).status == JobStatus.RUNNING
    assert tr.complete_stage(store, new, [out("x")], release=KEEP, now=113)


def test_restarts_cost_no_attempt_and_fail_past_max_interruptions(store) -> None:
    job_id = submit(store, max_attempts=2)
    for now in (101, 201, 301):
        c = claim(store, now=now)
        assert c.stage.attempts == 1
        tr.recover_lost_stages(store, now=now + 1, release=KEEP, all_running=True, max_interruptions=3)
        stage = store.get_job(job_id).stages[0]
        assert stage.status == StageStatus.QUEUED and "server restarted" in stage.error_message
    claim(store, now=401)
    tr.recover_lost_stages(store, now=402, release=KEEP, all_running=True, max_interruptions=3)
    job = store.get_job(job_id)
    assert job.status == JobStatus.FAILED and job.error_code == ErrorCode.WORKER_LOST
    assert "server restarted while this stage ran, 4 times" in job.error_message


def test_recovery_keeps_the_place_in_the_queue(store) -> None:
    first = submit(store, now=1)
    claim(store, now=2)
    second = submit(store, now=3)
    tr.recover_lost_stages(store, now=4, release=KEEP, all_running=True)
    assert claim(store, now=5).stage.job_id == first
    assert claim(store, now=6).stage.job_id == second


def test_requeue_at_shutdown_does_not_count_an_attempt(store) -> None:
    submit(store)
    c = claim(store)
    assert tr.requeue_stage(store, c, release=KEEP, now=102)
    assert claim(store, now=103).stage.attempts == 1


def test_cancel(store) -> None:
    queued = submit(store)
    assert tr.cancel_job(store, queued, release=KEEP, now=101) == JobStatus.CANCELLED
    assert all(s.status == StageStatus.CANCELLED for s in store.get_job(queued).stages)

    running = submit(store)
    c = claim(store)
    assert tr.cancel_job(store, running, release=KEEP, now=102) == JobStatus.RUNNING
    assert tr.report_progress(store, c, 0.2, now=103) is False, "the worker learns at its next report"
    tr.acknowledge_cancel(store, c, release=KEEP, now=104)
    assert store.get_job(running).status == JobStatus.CANCELLED
    with pytest.raises(Pocket3DError) as e:
        tr.cancel_job(store, "job_missing", release=KEEP, now=105)
    assert e.value.code == ErrorCode.JOB_NOT_FOUND


def test_queue_full(store) -> None:
    for _ in range(3):
        tr.submit(store, new_job(), queue_size=3, max_attempts=1, now=1)
    with pytest.raises(Pocket3DError) as e:
        tr.submit(store, new_job(), queue_size=3, max_attempts=1, now=1)
    assert e.value.code == ErrorCode.QUEUE_FULL and e.value.headers["Retry-After"]


def upload(store, file_id: str, sha: str, expires_at: float = 1000) -> None:
    tr.register_file(store, NewFile(id=file_id, owner_id="o", sha256=sha, size=1, media_type="image/png",
                                    kind="image", format="png", filename=None), now=1, expires_at=expires_at)


def test_an_upload_serves_any_number_of_jobs_until_it_expires(store) -> None:
    released: set[str] = set()
    store.add_release_listener(released.update)
    upload(store, "file_1", "c" * 64, expires_at=1000)
    a = submit(store, new_job(files=["file_1"]))
    tr.cancel_job(store, a, release=KEEP, now=200)
    assert store.get_file("file_1").expires_at == 1000, "a job ending neither deletes nor extends the upload"
    assert "c" * 64 in released, "the job let go of the blob; the upload's row still holds it"
    b = submit(store, new_job(files=["file_1"]), now=300)
    assert store.job_inputs(b)[0]["sha256"] == "c" * 64
    with pytest.raises(Pocket3DError) as e:
        submit(store, new_job(files=["file_1"]), now=1000)
    assert e.value.code == ErrorCode.FILE_EXPIRED and e.value.http_status == 410 and e.value.hint
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.job_inputs)).scalar() == 2, "history stays"


def test_expire_drops_outputs_and_leaves_tombstones_of_uploads(store) -> None:
    job_id = submit(store)
    for now in (101, 102):
        c = claim(store, now=now)
        tr.complete_stage(store, c, [out(f"o{now}", str(now).rjust(64, "0"))], release=KEEP, now=now)
    upload(store, "file_old", "d" * 64, expires_at=50)
    upload(store, "file_new", "e" * 64, expires_at=5000)
    in_use = submit(store, new_job(files=["file_old"]), now=40)
    released = tr.expire(store, now=200)
    assert released == {"101".rjust(64, "0"), "102".rjust(64, "0"), "d" * 64}
    assert store.get_job(job_id).outputs == [] and store.get_file("file_old") is None
    assert store.expired_file_owner("file_old") == "o" and store.expired_file_owner("file_new") is None
    assert [f.id for f in store.list_files("o", now=200)] == ["file_new"]
    assert store.get_job(in_use).status == JobStatus.QUEUED, "the job that took it still has its blob (job_inputs)"
    with pytest.raises(Pocket3DError) as e:
        submit(store, new_job(files=["file_old"]), now=201)
    assert e.value.code == ErrorCode.FILE_EXPIRED
    tr.expire(store, now=50 + tr.TOMBSTONE_SECONDS + 1)
    assert store.expired_file_owner("file_old") is None, "tombstones are forgotten after a while"


def test_a_deleted_upload_is_gone_at_once(store) -> None:
    released: set[str] = set()
    store.add_release_listener(released.update)
    upload(store, "file_d", "f" * 64)
    tr.delete_file(store, "file_d")
    assert store.get_file("file_d") is None and store.expired_file_owner("file_d") is None and released == {"f" * 64}
    for attempt in (lambda: tr.delete_file(store, "file_d"), lambda: submit(store, new_job(files=["file_d"]))):
        with pytest.raises(Pocket3DError) as e:
            attempt()
        assert e.value.code == ErrorCode.FILE_NOT_FOUND


def test_a_job_output_as_an_input(store) -> None:
    source = submit(store)
    for now in (101, 102):
        c = claim(store, models=("m",) if now == 101 else (), now=now)
        name = "model.glb" if now == 102 else "generate_mesh.mesh.glb"
        tr.complete_stage(store, c, [OutputRecord(name=name, stage_index=c.stage.index, sha256="7" * 64,
                                                  size=1, media_type="model/gltf-binary", format="glb",
                                                  public=now == 102)], release=KEEP, now=now)
    chained = NewJob(owner_id="o", feature="auto_rigging", model_id="m", stages=[NewStage("rig", "m")], request={},
                     inputs=[JobInput("mesh", job_id=source, output="model.glb")])
    job_id = submit(store, chained, now=110)
    assert store.job_inputs(job_id)[0] | {} == {"job_id": job_id, "position": 0, "file_id": source, "role": "mesh",
                                               "sha256": "7" * 64, "format": "glb"}
    tr.expire(store, now=102 + 60)
    with pytest.raises(Pocket3DError) as e:
        submit(store, chained, now=200)
    assert e.value.code == ErrorCode.OUTPUT_EXPIRED


def test_snapshots_follow_every_commit(store) -> None:
    from pocket3d.jobs.snapshots import JobSnapshots

    snaps = JobSnapshots(store, enabled=True)
    job_id = submit(store)
    assert snaps.get(job_id).status == JobStatus.QUEUED
    c = claim(store)
    assert snaps.get(job_id).status == JobStatus.RUNNING
    tr.report_progress(store, c, 0.5, now=102)
    assert snaps.get(job_id).progress == 45.0
    tr.cancel_job(store, job_id, release=KEEP, now=103)
    assert snaps.get(job_id).cancel_requested


def test_snapshots_do_not_keep_a_read_that_raced_a_write(store, monkeypatch) -> None:
    """A write that commits while a cache miss is being read must not leave the older read in the cache."""
    from pocket3d.jobs.snapshots import JobSnapshots

    snaps = JobSnapshots(store, enabled=True)
    job_id = submit(store)
    real_get = store.get_job
    fired = []

    def read_then_race(jid, conn=None):
        record = real_get(jid, conn)
        if not fired:
            fired.append(True)
            claim(store)  # commits after our read, before the cache would store it
        return record

    monkeypatch.setattr(store, "get_job", read_then_race)
    assert snaps.get(job_id).status == JobStatus.QUEUED  # what was read
    monkeypatch.setattr(store, "get_job", real_get)
    assert snaps.get(job_id).status == JobStatus.RUNNING, "the stale read was not cached"


def test_a_cancel_at_the_stage_boundary_is_not_lost(store) -> None:
    released: set[str] = set()
    store.add_release_listener(released.update)
    job_id = submit(store)
    c = claim(store)
    assert tr.cancel_job(store, job_id, release=KEEP, now=102) == JobStatus.RUNNING
    # the worker finished before its next progress report: the boundary honours the cancel
    assert tr.complete_stage(store, c, [out("generate_mesh.mesh.glb", "e" * 64)], release=KEEP, now=103)
    job = store.get_job(job_id)
    assert job.status == JobStatus.CANCELLED and [s.status for s in job.stages] == [StageStatus.SUCCEEDED,
                                                                                      StageStatus.CANCELLED]
    assert claim(store, now=104) is None and "e" * 64 in released


def test_a_shutdown_requeue_of_a_cancelled_job_cancels_it(store) -> None:
    job_id = submit(store)
    c = claim(store)
    tr.cancel_job(store, job_id, release=KEEP, now=102)
    tr.requeue_stage(store, c, release=KEEP, now=103)
    assert store.get_job(job_id).status == JobStatus.CANCELLED


def test_a_failed_job_releases_what_its_stages_stored(store) -> None:
    released: set[str] = set()
    store.add_release_listener(released.update)
    job_id = submit(store)
    c = claim(store)
    tr.complete_stage(store, c, [out("generate_mesh.mesh.glb", "f" * 64)], release=KEEP, now=102)
    export = claim(store, models=(), now=103)
    tr.fail_stage(store, export, code="MODEL_ERROR", message="x", retry=False, release=KEEP, now=104)
    assert store.get_job(job_id).outputs == [] and store.stage_outputs(job_id, 0) == []
    assert released == {"f" * 64}


def test_a_delete_racing_a_submit_leaves_the_job_its_input(store, tmp_path, monkeypatch) -> None:
    """The upload is deleted while a job taking it is being submitted: the submit either fails (the file is gone) or
    wins, and then the job holds the blob although the upload's row is gone."""
    from pocket3d.node import Retention
    from pocket3d.storage import LocalArtifactStore
    from pocket3d.storage.locks import BlobLock

    artifacts = LocalArtifactStore(tmp_path / "blobs")
    blob = tmp_path / "blobs" / "tmp" / "input"
    blob.write_bytes(b"an image")
    sha, _ = artifacts.put(blob)
    retention = Retention(store, artifacts, BlobLock(None if store.is_sqlite else store.engine))
    store.add_release_listener(retention.collect)
    upload(store, "file_s", sha)
    locked, go_on = threading.Event(), threading.Event()
    real_count = store.count_active_jobs

    def pause_after_locking_inputs(conn, *args, **kwargs):
        locked.set()
        go_on.wait(10)
        return real_count(conn, *args, **kwargs)

    monkeypatch.setattr(store, "count_active_jobs", pause_after_locking_inputs)
    result: dict[str, str] = {}
    submitting = threading.Thread(target=lambda: result.update(b=submit(store, new_job(files=["file_s"]))))
    submitting.start()
    assert locked.wait(10)
    deleting = threading.Thread(target=tr.delete_file, args=(store, "file_s"))
    deleting.start()
    deleting.join(0.5)
    assert deleting.is_alive(), "the delete waits for the submit that holds the upload"
    go_on.set()
    submitting.join(10)
    deleting.join(10)
    assert store.get_file("file_s") is None
    assert artifacts.exists(sha), "the queued job holds the blob"
    tr.cancel_job(store, result["b"], release=KEEP, now=200)
    assert not artifacts.exists(sha), "freed when the job ended"


def keyed(key: str, owner: str = "o", fingerprint: str = "f1", expires_at: float = 200.0) -> NewJob:
    job = new_job()
    return NewJob(owner_id=owner, feature=job.feature, model_id=job.model_id, stages=job.stages, request={},
                  idempotency=IdempotencyKey(key, fingerprint, expires_at))


def test_an_idempotency_key_makes_one_job_per_owner_until_it_expires(store) -> None:
    first = submit(store, keyed("k1"), now=100)
    assert store.idempotent_job("o", "k1", now=150) == (first, "f1")
    with pytest.raises(tr.IdempotencyKeyTaken):
        submit(store, keyed("k1", fingerprint="f2"), now=150)
    other_owner = submit(store, keyed("k1", owner="p"), now=150)
    assert other_owner != first and store.idempotent_job("p", "k1", now=150) == (other_owner, "f1")
    assert store.idempotent_job("o", "k1", now=201) is None, "an expired key is as good as none"
    tr.expire(store, now=201)
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.idempotency_keys)).scalar() == 0, \
            "retention sweeps expired keys"
    again = submit(store, keyed("k1", expires_at=400), now=202)
    assert again != first and store.idempotent_job("o", "k1", now=202) == (again, "f1")


def test_concurrent_submits_with_one_key_make_one_job(store) -> None:
    results: list[str] = []
    taken: list[BaseException] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait()
        try:
            results.append(submit(store, keyed("same")))
        except tr.IdempotencyKeyTaken as e:
            taken.append(e)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 1 and len(taken) == 7
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.jobs)).scalar() == 1


def test_concurrent_submits_keep_the_caps_and_each_is_committed_when_answered(store) -> None:
    """Submits arriving together (on SQLite they share a transaction, each in a savepoint): the global and per-owner
    caps hold exactly, a refused submit (a cap, a missing upload) leaves no row and takes no other submit with it,
    and an accepted one is committed, and announced, by the time its call returns."""
    heard: set[str] = set()
    store.add_event_listener(lambda events: heard.update(e.job_id for e in events))
    unseen: list[str] = []

    def burst(owner_of, queue_size: int, owner_limit: int) -> list[str]:
        barrier, outcomes = threading.Barrier(16), []

        def one(i: int) -> None:
            job = NewJob(**{**new_job(files=["file_missing"] if i % 8 == 7 else ()).__dict__, "owner_id": owner_of(i)})
            barrier.wait()
            for _ in range(4):
                try:
                    job_id = tr.submit(store, job, queue_size=queue_size, max_attempts=1, now=1,
                                       owner_limit=owner_limit)
                except Pocket3DError as e:
                    outcomes.append(e.code)
                    continue
                outcomes.append("accepted")
                if job_id not in heard:  # the store announces a write once it has committed
                    unseen.append(job_id)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert outcomes.count(ErrorCode.FILE_NOT_FOUND) == 8
        return outcomes

    for _ in range(10):
        submit(store, now=1)
    everyone = burst(lambda i: f"owner{i % 4}", queue_size=14, owner_limit=100)
    one_owner = burst(lambda i: "flood", queue_size=1000, owner_limit=4)
    assert unseen == [], "answered before it was committed and announced"
    with store.read() as conn:
        per_owner = dict(conn.execute(sa.select(t.jobs.c.owner_id, sa.func.count()).group_by(t.jobs.c.owner_id)).all())
        stages = conn.execute(sa.select(sa.func.count()).select_from(t.stages)).scalar()
    accepted = 10 + everyone.count("accepted") + one_owner.count("accepted")
    assert sum(per_owner.values()) == accepted and stages == 2 * accepted, "no row of a refused submit"
    # exactly, on PostgreSQL too: two submits committing at once must not each see room for one more
    assert everyone.count("accepted") == 4 and everyone.count(ErrorCode.QUEUE_FULL) == 52, "the queue's cap"
    assert per_owner["flood"] == 4 and one_owner.count(ErrorCode.CONCURRENCY_LIMITED) == 52, "the owner's cap"


def test_an_event_loop_and_threads_submitting_together_keep_the_caps(store) -> None:
    """The API submits a text prompt from its event loop (tr.submit_async: on SQLite the coroutine joins the group
    commit without a thread) while other submits come from threads: together the caps still hold exactly, a
    refused submit takes no other with it, an accepted one is committed and announced by the time it is answered,
    and the loop is never the thread that writes."""
    heard: set[str] = set()
    store.add_event_listener(lambda events: heard.update(e.job_id for e in events))
    writers: set[int] = set()
    store.add_listener(lambda job_ids: writers.add(threading.get_ident()))
    outcomes: list[str] = []
    unseen: list[str] = []

    def job_of(i: int) -> NewJob:
        return NewJob(**{**new_job(files=["file_missing"] if i % 8 == 7 else ()).__dict__, "owner_id": f"owner{i % 4}"})

    def accepted(job_id: str) -> None:
        outcomes.append("accepted")
        if job_id not in heard:
            unseen.append(job_id)

    async def from_the_loop(i: int) -> None:
        for _ in range(4):
            try:
                accepted(await tr.submit_async(store, job_of(i), queue_size=14, max_attempts=1, now=1, owner_limit=100))
            except Pocket3DError as e:
                outcomes.append(e.code)

    def from_a_thread(i: int) -> None:
        for _ in range(4):
            try:
                accepted(tr.submit(store, job_of(i), queue_size=14, max_attempts=1, now=1, owner_limit=100))
            except Pocket3DError as e:
                outcomes.append(e.code)

    async def burst() -> int:
        threads = [threading.Thread(target=from_a_thread, args=(i,)) for i in range(8, 16)]
        for th in threads:
            th.start()
        await asyncio.gather(*(from_the_loop(i) for i in range(8)))
        await asyncio.to_thread(lambda: [th.join() for th in threads])
        return threading.get_ident()

    for _ in range(10):
        submit(store, now=1)
    writers.clear()
    loop_thread = asyncio.run(burst())
    assert outcomes.count(ErrorCode.FILE_NOT_FOUND) == 8, "the two submits naming a missing upload, four times each"
    assert outcomes.count("accepted") == 4 and outcomes.count(ErrorCode.QUEUE_FULL) == 52, outcomes
    assert unseen == [], "answered before it was committed and announced"
    assert loop_thread not in writers, "the event loop waited; a thread wrote"
    with store.read() as conn:
        jobs = conn.execute(sa.select(sa.func.count()).select_from(t.jobs)).scalar()
        stages = conn.execute(sa.select(sa.func.count()).select_from(t.stages)).scalar()
    assert jobs == 14 and stages == 28, "no row of a refused submit"


def test_a_submit_racing_the_shutdown_is_still_answered(tmp_path) -> None:
    """The store closes (the node stops) while a thread's submit is being written and a coroutine's waits behind it:
    the coroutine's is answered, later writes still go through, and closing does not hang."""
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_schema()
    group = store._group
    assert group is not None
    asyncio.run(group.run_async(lambda tx: "warm"))  # the writer thread exists, idle
    hold, entered = threading.Event(), threading.Event()
    leader = threading.Thread(target=lambda: group.run(lambda tx: (entered.set(), hold.wait(10))))
    leader.start()
    assert entered.wait(10)
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever)
    loop_thread.start()
    try:
        queued = asyncio.run_coroutine_threadsafe(group.run_async(lambda tx: "answered"), loop)
        time.sleep(0.2)
        closing = threading.Thread(target=store.dispose)
        closing.start()
        hold.set()
        leader.join(10)
        assert queued.result(timeout=10) == "answered"
        closing.join(15)
        assert not closing.is_alive(), "closing waited for a writer that nothing would wake"
        later = threading.Thread(target=lambda: group.run(lambda tx: None), daemon=True)
        later.start()
        later.join(10)
        assert not later.is_alive(), "a write after the shutdown hung"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(10)
        loop.close()


def test_a_job_keeps_its_request_as_sent_and_what_each_stage_did(store) -> None:
    """The additive columns: jobs.input; stages.device, message, warnings, details (nullable, on both engines)."""
    sent = {"text_prompt": "a flurble", "quality": "high", "parameters": {"variation": 0.1}}
    job_id = submit(store, NewJob(**{**new_job().__dict__, "request": {"quality": "high"}, "input": sent}))
    c1 = tr.claim_stage(store, store.queued_stages()[0].stage_id, worker_id="w", lease_seconds=30, now=101,
                        device="cuda:1")
    assert tr.report_progress(store, c1, 0.2, now=102, message="shaping")
    assert tr.report_progress(store, c1, 0.4, now=103), "no message: the last one stays"
    stage = store.get_job(job_id).stages[0]
    assert (stage.device, stage.message, stage.progress) == ("cuda:1", "shaping", 0.4)
    assert tr.complete_stage(store, c1, [], release=KEEP, now=110, message="writing",
                             warnings=[StageWarning("UNKNOWN_OBJECT", "a generic shape")], details={"found": 1})
    c2 = claim(store, models=(), now=111)
    assert tr.complete_stage(store, c2, [], release=KEEP, now=112)
    job = store.get_job(job_id)
    assert job.input == sent and job.request == {"quality": "high"}
    first, export = job.stages
    assert (first.message, first.details, first.started_at, first.finished_at) == ("writing", {"found": 1}, 101, 110)
    assert first.warnings == [StageWarning("UNKNOWN_OBJECT", "a generic shape")]
    assert (export.device, export.message, export.warnings, export.details) == (None, None, [], None)
    # run times by (model, quality), from the stage's own start and end; pocket3d's own stages by name
    assert store.recent_stage_seconds() == {("m", "high"): 9.0, (EXPORT_STAGE, "high"): 1.0}
    job_id = submit(store, NewJob(**{**new_job().__dict__, "request": {"quality": "low"}}), now=200)
    c3 = claim(store, now=201)
    assert tr.report_progress(store, c3, 0.5, now=202, message="half way")
    assert tr.fail_stage(store, c3, code="WORKER_CRASHED", message="gone", retry=True, release=KEEP, now=203)
    c4 = claim(store, now=204)
    assert store.get_job(job_id).stages[0].message is None, "a new attempt starts clean"
    assert tr.complete_stage(store, c4, [], release=KEEP, now=205)
    assert store.recent_stage_seconds()[("m", "low")] == 1.0 and store.recent_stage_seconds()[("m", "high")] == 9.0


def test_more_blob_writers_at_once_than_the_pool_holds_all_commit(postgres_url, tmp_path) -> None:
    """A gateway's uploads (and a worker's stage outputs) hold their blob from before the upload to the bucket until
    their row commits. Holding it must not take a connection of the store's pool: with as many writers mid-upload as
    the pool has connections, none could get one to commit, and every request of the process waited for the pool
    and failed."""
    from pocket3d.storage import LocalArtifactStore
    from pocket3d.storage.locks import BlobLock

    store = Store(postgres_url)
    empty_database(store.engine)
    store.create_schema()
    artifacts = LocalArtifactStore(tmp_path / "blobs")
    lock = BlobLock(store.engine)
    writers = store.engine.pool.size() + store.engine.pool._max_overflow + 1  # one more than the pool holds
    all_uploading = threading.Barrier(writers, timeout=20)
    committed: list[str] = []
    failed: list[BaseException] = []

    def write(i: int) -> None:
        try:
            src = tmp_path / "blobs" / "tmp" / f"upload-{i}"
            src.write_bytes(f"upload {i}".encode())
            with lock.writing(artifacts) as blobs:
                sha, size = blobs.put(src)
                all_uploading.wait()  # every writer holds its blob, mid-upload
                tr.register_file(store, NewFile(id=f"file_{i}", owner_id="o", sha256=sha, size=size,
                                                media_type="image/png", kind="image", format="png", filename="a.png"),
                                 now=100.0, expires_at=1000.0)
            committed.append(f"file_{i}")
        except BaseException as e:  # noqa: BLE001 - reported below
            failed.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    try:
        assert not failed, failed[:2]
        assert sorted(committed) == sorted(f"file_{i}" for i in range(writers))
    finally:
        lock.close()
        store.dispose()
