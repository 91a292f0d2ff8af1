"""The webhook outbox in the job store, on both engines: a delivery commits with the state change it reports
(or not at all), claims do not overlap, attempts and what follows are recorded, progress is rate-limited."""

from __future__ import annotations

import pytest

from pocket3d.jobs import outbox
from pocket3d.jobs import transitions as tr
from pocket3d.jobs.records import EXPORT_STAGE, DeliveryStatus, NewJob, NewStage
from pocket3d.jobs.store import Store
from postgres import empty_database

RELEASE = tr.ReleasePolicy(keep_seconds=60)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Store:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    else:
        s = Store(request.getfixturevalue("postgres_url"))
        empty_database(s.engine)
    s.create_schema()
    yield s
    s.dispose()


def _submit(store: Store, **request) -> str:
    job = NewJob(owner_id="o", feature="mesh_generation", model_id="m", request=request,
                 stages=[NewStage("generate_mesh", "m"), NewStage(EXPORT_STAGE, None, {"format": "glb"})])
    return tr.submit(store, job, queue_size=100, max_attempts=3, now=100.0)


def _claim(store: Store, now: float = 101.0):
    return tr.claim_next_stage(store, worker_id="w", model_ids=["m"], include_export=True, lease_seconds=30, now=now)


def test_an_ending_job_writes_its_deliveries_in_the_same_transaction(store: Store) -> None:
    endpoint, secret = outbox.create_endpoint(store, owner_id="o", url="https://a.example/failed",
                                              events=["job.failed"], description=None, max_endpoints=5, now=1.0)
    quiet = _submit(store)  # no webhook_url
    hooked = _submit(store, webhook_url="https://b.example/hook")
    stage = _claim(store)
    assert stage.stage.job_id == quiet
    # A report under a lost lease changes nothing, and so writes no delivery.
    stale = type(stage)(stage.stage, "not-the-token", stage.job_request, stage.owner_id)
    assert not tr.fail_stage(store, stale, code="MODEL_ERROR", message="x", retry=False, release=RELEASE, now=102)
    assert outbox.deliveries_of_job(store, quiet) == []
    assert tr.fail_stage(store, stage, code="MODEL_ERROR", message="boom", retry=False, release=RELEASE, now=102)
    [failed] = outbox.deliveries_of_job(store, quiet)
    assert failed.endpoint_id == endpoint.id and failed.event == "job.failed"
    assert failed.payload["data"]["error"] == {"code": "MODEL_ERROR", "message": "boom"}

    assert tr.cancel_job(store, hooked, release=RELEASE, now=103).value == "cancelled"
    [cancelled] = outbox.deliveries_of_job(store, hooked)
    assert cancelled.endpoint_id is None and cancelled.url == "https://b.example/hook"
    assert cancelled.event == "job.cancelled" and cancelled.status == DeliveryStatus.PENDING

    claimed = outbox.claim_due(store, limit=10, lease_seconds=60, now=104)
    assert {c.delivery.id for c in claimed} == {failed.id, cancelled.id}
    assert outbox.claim_due(store, limit=10, lease_seconds=60, now=105) == [], "a claim is held until its lease ends"
    by_id = {c.delivery.id: c for c in claimed}
    assert by_id[failed.id].secret == secret
    assert by_id[cancelled.id].secret == outbox.owner_secret(store, "o", now=106) != secret

    assert outbox.record_attempt(store, failed.id, started_at=106, seconds=0.1, status_code=500, error="HTTP 500",
                                 succeeded=False, next_attempt_at=200, now=106) == DeliveryStatus.PENDING
    assert outbox.next_due(store) == 164.0, "the other claim's lease ends first"
    assert outbox.record_attempt(store, cancelled.id, started_at=106, seconds=0.1, status_code=200, error=None,
                                 succeeded=True, next_attempt_at=None, now=106) == DeliveryStatus.SUCCEEDED
    assert outbox.claim_due(store, limit=10, lease_seconds=60, now=150) == []
    [again] = outbox.claim_due(store, limit=10, lease_seconds=60, now=200)
    assert again.delivery.id == failed.id and again.delivery.attempts == 1
    assert outbox.release_all_sending(store, now=201) == 1, "a restarted only sender takes back what it had"
    assert outbox.delete_endpoint(store, endpoint.id, now=202)
    [gone] = outbox.deliveries_of_job(store, quiet)
    assert gone.status == DeliveryStatus.FAILED and [a.status_code for a in gone.history] == [500]
    assert outbox.count_by_status(store) == {"failed": 1, "succeeded": 1}


def test_progress_messages_are_rate_limited_and_superseded(store: Store) -> None:
    job_id = _submit(store, webhook_url="https://b.example/hook",
                     webhook_events=["job.progress", "job.succeeded"])
    stage = _claim(store)
    for i, now in enumerate([102.0, 103.0, 104.0, 113.0]):
        assert tr.report_progress(store, stage, 0.2 * (i + 1), now, webhook_interval=10.0)
    sent = outbox.deliveries_of_job(store, job_id)
    assert [d.created_at for d in sent] == [102.0, 113.0], "one a job per 10 s"
    assert tr.complete_stage(store, stage, [], release=RELEASE, now=114)
    export = _claim(store, now=115)
    assert tr.complete_stage(store, export, [], release=RELEASE, now=116)
    statuses = [(d.event, d.status) for d in outbox.deliveries_of_job(store, job_id)]
    assert statuses == [("job.progress", "superseded"), ("job.progress", "superseded"),
                        ("job.succeeded", "pending")], "a progress message not sent yet says less than the end"


def test_no_more_endpoints_than_allowed(store: Store) -> None:
    for i in range(2):
        outbox.create_endpoint(store, owner_id="o", url=f"https://a.example/{i}", events=["job.failed"],
                               description=None, max_endpoints=2, now=1.0)
    with pytest.raises(Exception) as e:
        outbox.create_endpoint(store, owner_id="o", url="https://a.example/3", events=["job.failed"],
                               description=None, max_endpoints=2, now=1.0)
    assert e.value.code == "WEBHOOK_LIMIT_REACHED"
    outbox.create_endpoint(store, owner_id="p", url="https://a.example/3", events=["job.failed"], description=None,
                           max_endpoints=2, now=1.0)
