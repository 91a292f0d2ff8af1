"""Idempotency-Key on submit, over HTTP on a real server: a retried submit returns the job the first one made."""

from __future__ import annotations

import base64
import uuid

import httpx
from client_helpers import IMAGES, upload


def _jobs(client: httpx.Client) -> set[str]:
    return {j["job_id"] for j in client.get("/jobs", params={"limit": 100}).json()["jobs"]}


def test_the_same_key_and_body_return_the_first_job(client: httpx.Client) -> None:
    file_id = upload(client, IMAGES / "T.png")["file_id"]
    key = str(uuid.uuid4())
    body = {"images": [file_id], "parameters": {"delay": 0.3}}
    first = client.post("/mesh/generate", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    before = _jobs(client)

    # the same request with its defaults spelled out is the same request
    again = client.post("/mesh/generate", json={**body, "quality": "medium", "output_format": "glb"},
                        headers={"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["job_id"] == job_id and again.json()["status"] in ("queued", "running", "succeeded")
    assert _jobs(client) == before, "no second job"

    waited = client.post("/mesh/generate?wait=60", json=body, headers={"Idempotency-Key": key}, timeout=90)
    assert waited.status_code == 200 and waited.json()["status"] == "succeeded"
    assert waited.json()["job_id"] == job_id

    other = client.post("/mesh/generate", json={**body, "seed": 7}, headers={"Idempotency-Key": key})
    assert other.status_code == 409, other.text
    err = other.json()
    assert err["error_code"] == "IDEMPOTENCY_KEY_REUSED" and err["details"]["job_id"] == job_id
    assert "new key" in err["hint"]
    elsewhere = client.post("/segment", json={"mesh": file_id}, headers={"Idempotency-Key": key})
    assert elsewhere.status_code == 409, "a key belongs to one request, whatever the route"
    assert _jobs(client) == before


def test_a_refused_submit_does_not_take_its_key(client: httpx.Client) -> None:
    key = str(uuid.uuid4())
    bad = client.post("/mesh/generate", json={"images": ["file_missing"]}, headers={"Idempotency-Key": key})
    assert bad.status_code == 404 and bad.json()["error_code"] == "FILE_NOT_FOUND"
    png = base64.b64encode((IMAGES / "T.png").read_bytes()).decode()
    good = client.post("/mesh/generate", json={"images": [f"data:image/png;base64,{png}"]},
                       headers={"Idempotency-Key": key})
    assert good.status_code == 202, "the key was not spent on a request that made no job"


def test_a_malformed_key_is_refused(client: httpx.Client) -> None:
    for key in (b"x" * 256, "caf\u00e9".encode()):
        r = client.post("/mesh/generate", json={"text_prompt": "a chair"}, headers={"Idempotency-Key": key})
        assert r.status_code == 422 and r.json()["error_code"] == "INVALID_REQUEST", r.text
        assert "Idempotency-Key" in r.json()["message"]
