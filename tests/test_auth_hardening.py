"""With auth on (issue 11): the key is checked from the headers before any body is read, on every route that
takes one; an open event stream ends when its key is revoked; admins, and only admins, see other owners' files,
server paths and process details."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from client_helpers import IMAGES, finish, submit, upload, wait_final
from server import ServerProcess, cli

AUTH = {"POCKET3D_AUTH__ENABLED": "true", "POCKET3D_BPY_PYTHON": "/opt/hidden-layout/bpy/bin/python",
        "POCKET3D_SCHEDULER__MAX_JOBS_PER_OWNER": "3", "POCKET3D_SCHEDULER__QUEUE_SIZE": "6"}
BODY_ROUTES = ["/mesh/generate", "/texture/generate", "/segment", "/rig", "/jobs/job_x/cancel", "/files"]


class Keys:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.alice = self._create("alice")
        self.bob = self._create("bob")
        self.admin = self._create("ops", "admin")

    def _create(self, name: str, role: str = "user") -> str:
        token = cli(self.data_dir, "keys", "create", "--name", name, "--role", role, env=AUTH).stdout.strip()
        assert token.startswith("p3d_")
        return token


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Keys]]:
    data_dir = tmp_path_factory.mktemp("auth") / "data"
    keys = Keys(data_dir)
    proc = ServerProcess(data_dir, env=AUTH).start()
    yield proc, keys
    proc.kill()


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_no_key_is_401_before_a_malformed_body_is_parsed(auth_server, route) -> None:
    srv, _ = auth_server
    with httpx.Client(base_url=f"{srv.url}/api/v1") as anon:
        for headers in ({}, {"Authorization": "Bearer p3d_nope_nope"}, {"X-API-Key": "garbage"}):
            r = anon.post(route, content=b'{"not json', headers={"Content-Type": "application/json", **headers})
            assert r.status_code == 401, (route, headers, r.text)
            assert r.json()["error_code"] == "UNAUTHORIZED"
            assert r.headers["www-authenticate"] == "Bearer"


def _post_unread(port: int, size: int) -> tuple[int, float]:
    """POST a ``size``-byte JSON body with no key from a raw socket, the body streaming in a thread while the
    answer is read: (status, seconds to the answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /api/v1/mesh/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {size}\r\n\r\n".encode())

    def pump() -> None:
        chunk = b" " * (1 << 20)
        try:
            for _ in range(size >> 20):
                sock.sendall(chunk)
        except OSError:  # the server answered and closed: the rest is never read
            pass

    sender = threading.Thread(target=pump, daemon=True)
    started = time.monotonic()
    sender.start()
    answer = b""
    while b"\r\n\r\n" not in answer:
        got = sock.recv(65536)
        if not got:
            break
        answer += got
    took = time.monotonic() - started
    sender.join(30)
    sock.close()
    return int(answer.split(b" ", 2)[1]), took


def test_a_90_mb_body_without_a_key_is_answered_401_unread(auth_server) -> None:
    srv, _ = auth_server
    server = psutil.Process(srv.proc.pid)
    before = server.memory_info().rss
    status, took = _post_unread(srv.port, 90 << 20)
    grown = (server.memory_info().rss - before) / 2**20
    assert status == 401
    assert took < 5, "answered from the headers, not after the body"
    assert grown < 50, f"the server grew {grown:.0f} MB"


def test_every_route_that_takes_a_key_documents_401(auth_server) -> None:
    srv, keys = auth_server
    spec = httpx.get(f"{srv.url}/openapi.json").json()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            if op.get("security"):
                assert "401" in op["responses"], (method, path)
                checked += 1
    assert checked >= 10
    for path in ("/api/v1/files/{file_id}", "/api/v1/system/devices", "/api/v1/system/models"):
        assert "401" in next(iter(spec["paths"][path].values()))["responses"], path


def test_an_admin_reads_another_owners_files_as_it_reads_their_jobs(auth_server) -> None:
    srv, keys = auth_server
    with srv.client(keys.alice) as alice, srv.client(keys.bob) as bob, srv.client(keys.admin) as admin:
        file_id = upload(alice, IMAGES / "T.png")["file_id"]
        assert bob.get(f"/files/{file_id}").status_code == 404
        assert admin.get(f"/files/{file_id}").status_code == 200
        job = submit(admin, "/mesh/generate", {"images": [file_id], "model_preference": "test_heightfield"})
        assert wait_final(admin, job["job_id"])["status"] == "succeeded", "an admin may use it, too"


def test_server_paths_and_process_details_are_for_admins(auth_server) -> None:
    srv, keys = auth_server
    with srv.client(keys.alice) as alice, srv.client(keys.admin) as admin:
        image = upload(alice, IMAGES / "T.png")["file_id"]
        failed = finish(alice, "/mesh/generate?wait=20", {
            "images": [image], "model_preference": "test_failing",
            "parameters": {"message": "weights missing at /opt/TRELLIS.2/ckpts/model.pt"}})
        assert failed["status"] == "failed"
        assert failed["error"]["message"] == "RuntimeError: weights missing at <server path>", failed["error"]
        assert "/opt/TRELLIS.2/ckpts" in admin.get(f"/jobs/{failed['job_id']}").json()["error"]["message"]
        # The job's input echoes alice's own parameters (the path she sent); what the server said is redacted.
        assert alice.get(f"/jobs/{failed['job_id']}").json()["error"] == failed["error"], "the cache keeps them apart"
        listed = next(j for j in alice.get("/jobs").json()["jobs"] if j["job_id"] == failed["job_id"])
        assert listed["error"] == failed["error"]
        warned = finish(alice, "/mesh/generate?wait=20", {
            "images": [upload(alice, IMAGES / "T.png")["file_id"]], "model_preference": "test_heightfield",
            "parameters": {"warning": "no weights under /opt/TRELLIS.2/ckpts: used the defaults"}})
        assert [w["message"] for w in warned["warnings"]] == ["no weights under <server path>: used the defaults"]
        assert "/opt/TRELLIS.2/ckpts" in admin.get(f"/jobs/{warned['job_id']}").json()["warnings"][0]["message"]

        user_models, admin_models = alice.get("/system/models").text, admin.get("/system/models").text
        assert "/opt/hidden-layout" in admin_models and "/opt/hidden-layout" not in user_models
        image = upload(alice, IMAGES / "T.png")["file_id"]  # the failed job's input went with it
        r = alice.post("/mesh/generate", json={"images": [image], "output_format": "fbx"})
        assert r.status_code == 422 and "/opt/hidden-layout" not in r.text

        for device in alice.get("/system/devices").json():
            assert device["worker_pid"] is None and device["running_stages"] == []
        assert any(d["worker_pid"] for d in admin.get("/system/devices").json())


def test_an_open_event_stream_ends_when_its_key_is_revoked(auth_server, tmp_path) -> None:
    srv, keys = auth_server
    carol = keys._create("carol")
    with srv.client(carol) as c, srv.client(keys.admin) as admin:
        image = upload(c, IMAGES / "T.png")["file_id"]
        job_id = submit(c, "/mesh/generate", {"images": [image], "model_preference": "test_heightfield",
                                              "parameters": {"delay": 60, "steps": 100}})["job_id"]
        events: list[tuple[str, str]] = []
        ended = threading.Event()

        def read() -> None:
            with c.stream("GET", f"/jobs/{job_id}/events", timeout=60) as r:
                kind = "message"
                for line in r.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        events.append((kind, line[5:].strip()))
            ended.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 20
        while not events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events, "the stream was open"
        cli(srv.data_dir, "keys", "revoke", carol.split("_")[1], env=AUTH)
        assert ended.wait(15), "the stream ended after the revocation"
        kind, data = events[-1]
        assert kind == "error" and json.loads(data)["error_code"] == "UNAUTHORIZED"
        admin.post(f"/jobs/{job_id}/cancel")


def test_one_owners_flood_gets_429_while_another_owner_gets_in(auth_server) -> None:
    srv, keys = auth_server
    dave, erin = keys._create("dave"), keys._create("erin")
    slow = {"model_preference": "test_heightfield", "parameters": {"delay": 60, "steps": 100}}
    with srv.client(dave) as d, srv.client(erin) as e:
        image = upload(d, IMAGES / "T.png")["file_id"]
        mine = [submit(d, "/mesh/generate", {"images": [image], **slow})["job_id"] for _ in range(3)]
        try:
            flood = d.post("/mesh/generate", json={"images": [image], **slow})
            assert flood.status_code == 429, flood.text
            assert flood.json()["error_code"] == "CONCURRENCY_LIMITED"
            assert int(flood.headers["Retry-After"]) > 0
            theirs = submit(e, "/mesh/generate", {"images": [upload(e, IMAGES / "T.png")["file_id"]], **slow})
            e.post(f"/jobs/{theirs['job_id']}/cancel")
            ended = mine.pop()
            d.post(f"/jobs/{ended}/cancel")
            assert wait_final(d, ended)["status"] == "cancelled"  # a running job stops at its next report
            submit(d, "/mesh/generate", {"images": [image], **slow})  # room again, once one of dave's jobs ended
        finally:
            for job_id in d.get("/jobs", params={"status": "queued"}).json()["jobs"]:
                d.post(f"/jobs/{job_id['job_id']}/cancel")
            for job_id in d.get("/jobs", params={"status": "running"}).json()["jobs"]:
                d.post(f"/jobs/{job_id['job_id']}/cancel")


def test_without_blender_an_fbx_upload_is_still_walked_before_any_model_reads_it(auth_server) -> None:
    """This server has no bpy environment (POCKET3D_BPY_PYTHON points nowhere): an FBX is kept for models that
    read FBX themselves, but only once its records add up; ASCII FBX passes on its signature."""
    from hostile_files import ascii_fbx, garbage_binary_fbx

    srv, keys = auth_server
    with srv.client(keys.alice) as alice:
        garbage = alice.post("/files", files={"file": ("g.fbx", garbage_binary_fbx(), "application/octet-stream")})
        assert garbage.status_code == 422 and "malformed" in garbage.json()["message"], garbage.text
        text = alice.post("/files", files={"file": ("a.fbx", ascii_fbx(), "application/octet-stream")})
        assert text.status_code == 201, text.text
