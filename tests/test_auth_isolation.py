"""Owners from the start: API keys, stored as hashes, and one owner's jobs and files invisible to another."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from client_helpers import IMAGES, finish, follow_events, submit, upload
from server import cli

AUTH = {"POCKET3D_AUTH__ENABLED": "true"}


def create_key(data_dir, name: str, role: str = "user") -> str:
    out = cli(data_dir, "keys", "create", "--name", name, "--role", role, env=AUTH)
    token = out.stdout.strip()
    assert token.startswith("p3d_"), out
    return token


@pytest.fixture
def two_owners(make_server, tmp_path):
    data_dir = tmp_path / "data"
    alice, bob = create_key(data_dir, "alice"), create_key(data_dir, "bob")
    return make_server(data_dir, env=AUTH), alice, bob


def test_keys_are_stored_only_as_hashes(tmp_path) -> None:
    data_dir = tmp_path / "data"
    token = create_key(data_dir, "carol", "admin")
    secret = token.split("_", 2)[2]
    db = sqlite3.connect(data_dir / "pocket3d.db")
    dump = "\n".join(db.iterdump())
    assert secret not in dump and "carol" in dump
    listed = cli(data_dir, "keys", "list", env=AUTH).stdout
    assert "carol" in listed and "role=admin" in listed and "active" in listed and secret not in listed


def test_requests_without_a_valid_key_are_refused(two_owners) -> None:
    srv, alice, _ = two_owners
    with httpx.Client(base_url=f"{srv.url}/api/v1") as anon:
        r = anon.get("/jobs")
        assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHORIZED"
        assert r.headers["www-authenticate"] == "Bearer"
        assert anon.get("/jobs", headers={"Authorization": "Bearer p3d_nope_nope"}).status_code == 401
        assert anon.get("/jobs", headers={"X-API-Key": alice}).status_code == 200, "X-API-Key works too"
        assert anon.get("/system/health").status_code == 200, "liveness needs no key"


def test_me_says_whose_key_it_is_and_asks_for_one_without(two_owners) -> None:
    srv, alice, _ = two_owners
    with httpx.Client(base_url=f"{srv.url}/api/v1") as anon:
        nobody = anon.get("/me")
        assert nobody.status_code == 200, "the web app asks for a key without a failed request first"
        assert nobody.json()["owner_id"] is None and nobody.json()["auth_enabled"] is True
        wrong = anon.get("/me", headers={"Authorization": "Bearer p3d_nope_nope"})
        assert wrong.status_code == 401 and wrong.json()["error_code"] == "UNAUTHORIZED"
        me = anon.get("/me", headers={"Authorization": f"Bearer {alice}"}).json()
        assert (me["owner_id"], me["role"], me["key_id"]) == ("alice", "user", alice.split("_")[1])
        assert me["limits"]["max_file_size"] > 0 and me["limits"]["max_jobs_per_owner"] > 0


def test_revoked_key_stops_working(two_owners) -> None:
    srv, alice, _ = two_owners
    with srv.client(alice) as c:
        assert c.get("/jobs").status_code == 200
        key_id = alice.split("_")[1]
        cli(srv.data_dir, "keys", "revoke", key_id, env=AUTH)
        assert c.get("/jobs").status_code == 401


def test_another_owner_sees_nothing(two_owners) -> None:
    srv, alice, bob = two_owners
    with srv.client(alice) as a, srv.client(bob) as b:
        file_a = upload(a, IMAGES / "T.png")
        done = finish(a, "/mesh/generate?wait=20", {"images": [file_a["file_id"]]})
        assert done["status"] == "succeeded"
        slow_file = upload(a, IMAGES / "T.png")
        slow = submit(a, "/mesh/generate", {"images": [slow_file["file_id"]], "parameters": {"delay": 30}})
        output_url = done["outputs"][0]["url"].removeprefix("/api/v1")

        assert a.get(f"/files/{slow_file['file_id']}/content").content == (IMAGES / "T.png").read_bytes()
        for path in (f"/jobs/{done['job_id']}", f"/mesh/status/{done['job_id']}", output_url,
                     f"/jobs/{slow['job_id']}/events", f"/files/{slow_file['file_id']}",
                     f"/files/{slow_file['file_id']}/content"):
            r = b.get(path)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error_code"] in ("JOB_NOT_FOUND", "FILE_NOT_FOUND")
        r = b.post(f"/jobs/{slow['job_id']}/cancel")
        assert r.status_code == 404 and r.json()["error_code"] == "JOB_NOT_FOUND"
        assert b.get("/jobs").json()["jobs"] == [] and b.get("/files").json()["files"] == []
        assert b.delete(f"/files/{slow_file['file_id']}").json()["error_code"] == "FILE_NOT_FOUND"
        # bob cannot use alice's upload as his input either
        r = b.post("/mesh/generate", json={"images": [slow_file["file_id"]]})
        assert r.status_code == 404 and r.json()["error_code"] == "FILE_NOT_FOUND"
        # nor her job's output, nor convert her job
        r = b.post("/rig", json={"mesh": f"{done['job_id']}/model.glb"})
        assert r.status_code == 404 and r.json()["error_code"] == "JOB_NOT_FOUND"
        r = b.post(f"/jobs/{done['job_id']}/convert", json={"output_formats": ["obj"]})
        assert r.status_code == 404 and r.json()["error_code"] == "JOB_NOT_FOUND"

        # ...while alice still can do all of it
        assert a.get(output_url).status_code == 200
        assert {j["job_id"] for j in a.get("/jobs").json()["jobs"]} == {done["job_id"], slow["job_id"]}
        assert a.post(f"/jobs/{slow['job_id']}/cancel").status_code == 200
        assert follow_events(a, slow["job_id"])[-1][1]["status"] == "cancelled"


def test_refuses_to_serve_without_auth_beyond_loopback(tmp_path) -> None:
    r = cli(tmp_path / "data", "serve", "--host", "0.0.0.0", "--port", "1", check=False)
    assert r.returncode != 0
    assert "server.host" in r.stderr and "auth.enabled" in r.stderr
