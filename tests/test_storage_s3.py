"""Artifacts on S3 (storage.backend: s3) against a real S3 server on loopback (SeaweedFS): the store itself, a
server running jobs on it, both download modes, retention, and an unreachable store."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest
from client_helpers import IMAGES, finish, upload
from server import SUPPORT, free_port

from pocket3d.config import load_settings
from pocket3d.node import Node
from pocket3d.storage import BlobMissing, StorageUnavailable
from pocket3d.storage.s3 import S3ArtifactStore


def local_blobs(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "artifacts").rglob("*") if p.is_file()}


def s3_env(s3, prefix: str, **extra: str) -> dict[str, str]:
    return {**s3.env, "POCKET3D_STORAGE__BACKEND": "s3", "POCKET3D_STORAGE__S3__BUCKET": s3.bucket,
            "POCKET3D_STORAGE__S3__ENDPOINT": s3.endpoint, "POCKET3D_STORAGE__S3__PREFIX": prefix, **extra}


def stored(s3, prefix: str) -> set[str]:
    """The hashes under a prefix, read from the bucket with a client of the test's own."""
    return {key.rsplit("/", 1)[-1] for key in s3.keys(prefix)}


@pytest.fixture
def prefix() -> str:
    return f"t-{secrets.token_hex(4)}/"


@pytest.fixture
def store(s3_server, tmp_path, prefix, monkeypatch) -> S3ArtifactStore:
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return S3ArtifactStore(tmp_path, bucket=s3_server.bucket, prefix=prefix, endpoint=s3_server.endpoint,
                           part_size=5 * 1024 * 1024, max_concurrency=4)


def test_the_store_keeps_blobs_by_hash_and_uploads_in_parts_from_disk(store, s3_server, prefix, tmp_path) -> None:
    size = 48 * 1024 * 1024
    src = store.tmp / "big.bin"
    with open(src, "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()

    tracemalloc.start()
    try:
        assert store.put(src) == (digest, size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not src.exists(), "put consumes its source"
    assert peak < 16 * 1024 * 1024, f"a {size >> 20} MB upload held {peak >> 20} MB in Python at its peak"
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"{prefix}{digest[:2]}/{digest[2:4]}/{digest}")
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith("-10"), f"not a 10-part multipart upload: {head['ETag']}"

    again = store.tmp / "again.bin"
    work = tmp_path / "work"
    work.mkdir()
    fetched = store.local_file(digest, work)
    again.write_bytes(fetched.read_bytes())
    assert store.put(again, digest) == (digest, size), "the same bytes again are not uploaded twice"
    assert not again.exists()
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == digest
    assert list(store.hashes()) == [digest]
    assert b"".join(store.open_range(digest, 10, 19)) == fetched.read_bytes()[10:20]
    assert b"".join(store.open_range(digest, size - 5, None)) == fetched.read_bytes()[-5:]

    assert store.delete(digest) is True
    assert store.delete(digest) is False
    assert stored(s3_server, prefix) == set()
    (work / "other").mkdir()
    with pytest.raises(BlobMissing):
        store.local_file(digest, work / "other")
    with pytest.raises(BlobMissing):
        store.open_range(digest, 0, None)


@pytest.fixture(scope="module")
def s3_prefix() -> str:
    return f"srv-{secrets.token_hex(4)}/"


@pytest.fixture(scope="module")
def s3_srv(s3_server, s3_prefix, tmp_path_factory):
    from server import ServerProcess

    proc = ServerProcess(tmp_path_factory.mktemp("s3srv") / "data", env=s3_env(s3_server, s3_prefix)).start()
    yield proc
    proc.stop()


def test_a_job_runs_on_s3_and_downloads_are_proxied_with_range_and_etag(s3_srv, s3_server, s3_prefix) -> None:
    with s3_srv.client() as c:
        info = upload(c, IMAGES / "T.png")
        assert stored(s3_server, s3_prefix) == {info["sha256"]}, "the upload is in the bucket"
        job = finish(c, "/mesh/generate?wait=30", {"images": [info["file_id"]]})
        assert job["status"] == "succeeded", job
        in_bucket = stored(s3_server, s3_prefix)
        assert {o["sha256"] for o in job["outputs"]} <= in_bucket, "every output is in the bucket"
        assert info["sha256"] in in_bucket, "the upload lives on until it expires or is deleted"
        assert local_blobs(s3_srv.data_dir) == set(), "nothing is kept in the local data dir"
        assert not any((s3_srv.data_dir / "tmp").iterdir()), "no temporary file is left"

        model = next(o for o in job["outputs"] if o["name"] == "model.glb")
        sha = model["sha256"]
        obj = s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"{s3_prefix}{sha[:2]}/{sha[2:4]}/{sha}")
        in_s3 = obj["Body"].read()
        r = c.get(f"/jobs/{job['job_id']}/outputs/model.glb")
        assert r.status_code == 200 and r.content == in_s3 and hashlib.sha256(r.content).hexdigest() == sha
        assert r.headers["etag"] == f'"{sha}"' and r.headers["accept-ranges"] == "bytes"
        assert r.headers["content-type"] == "model/gltf-binary"
        assert r.headers["content-disposition"] == 'attachment; filename="T.glb"'  # named after the upload

        r = c.get(f"/jobs/{job['job_id']}/outputs/model.glb", headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == in_s3[100:200]
        assert r.headers["content-range"] == f"bytes 100-199/{len(in_s3)}"
        r = c.get(f"/jobs/{job['job_id']}/outputs/model.glb", headers={"Range": "bytes=-50"})
        assert r.status_code == 206 and r.content == in_s3[-50:]
        r = c.get(f"/jobs/{job['job_id']}/outputs/model.glb",
                  headers={"Range": "bytes=0-9", "If-Range": '"another-version"'})
        assert r.status_code == 200 and r.content == in_s3, "a stale If-Range gets the whole object"
        r = c.get(f"/jobs/{job['job_id']}/outputs/model.glb", headers={"Range": f"bytes={len(in_s3)}-"})
        assert r.status_code == 416 and r.json()["error_code"] == "RANGE_NOT_SATISFIABLE"
        r = c.get(f"/jobs/{job['job_id']}/outputs/model.glb", headers={"If-None-Match": f'"{sha}"'})
        assert r.status_code == 304


def test_a_failed_job_leaves_nothing_and_a_deleted_upload_leaves_the_bucket(s3_srv, s3_server, s3_prefix) -> None:
    with s3_srv.client() as c:
        before = stored(s3_server, s3_prefix)
        info = upload(c, IMAGES / "typical_humanoid_block_robot.png")
        job = finish(c, "/mesh/generate?wait=30", {"images": [info["file_id"]], "model_preference": "test_failing"})
        assert job["status"] == "failed"
        assert stored(s3_server, s3_prefix) == before | {info["sha256"]}, "no output, the upload alone stays"
        assert c.delete(f"/files/{info['file_id']}").status_code in (200, 204)
        assert stored(s3_server, s3_prefix) == before


def test_ready_and_uploads_answer_503_when_the_store_is_unreachable(make_server, s3_server) -> None:
    # a port nothing listens on: every request to the store is refused
    srv = make_server(env=s3_env(s3_server, "down/", POCKET3D_STORAGE__S3__ENDPOINT=f"http://127.0.0.1:{free_port()}"))
    with srv.client() as c:
        r = c.get("/system/ready")
        assert r.status_code == 503 and any("artifact store unreachable" in x for x in r.json()["details"]["reasons"])
        with open(IMAGES / "T.png", "rb") as f:
            r = c.post("/files", files={"file": ("T.png", f, "image/png")})
        assert r.status_code == 503, r.text
        assert r.json()["error_code"] == "STORAGE_UNAVAILABLE" and r.headers["retry-after"]
    assert not any((srv.data_dir / "tmp").iterdir()), "the staged upload was removed"


def test_downloads_redirect_to_a_presigned_url_and_expired_outputs_leave_the_bucket(make_server, s3_server, prefix,
                                                                                   tmp_path, monkeypatch) -> None:
    # clients are told the store's public address, which may differ from the one the server uses
    public = s3_server.endpoint.replace("127.0.0.1", "localhost")
    data_dir = tmp_path / "data"
    env = s3_env(s3_server, prefix, POCKET3D_STORAGE__S3__DOWNLOADS="redirect",
                 POCKET3D_STORAGE__S3__PUBLIC_ENDPOINT=public)
    srv = make_server(data_dir, env=env)
    # The web app fetches its downloads from the store: its page's policy lets it, and no other host.
    policy = httpx.get(srv.url + "/", timeout=30).headers["content-security-policy"]
    assert f"connect-src 'self' blob: data: {public} " in policy + " "
    with srv.client() as c:
        job = finish(c, "/mesh/generate?wait=30", {"images": [upload(c, IMAGES / "T.png")["file_id"]]})
        model = next(o for o in job["outputs"] if o["name"] == "model.glb")
        r = c.get(f"/jobs/{job['job_id']}/outputs/model.glb")
        assert r.status_code == 307 and r.headers["location"].startswith(public + "/")
        assert r.headers["etag"] == f'"{model["sha256"]}"' and r.headers["cache-control"] == "no-store"
        got = httpx.get(r.headers["location"], timeout=30)
        assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == model["sha256"]
        assert got.headers["content-disposition"] == 'attachment; filename="T.glb"'  # the store names it as the server would
        assert got.headers["content-type"] == "model/gltf-binary"
        r = c.get(f"/jobs/{job['job_id']}/outputs/model.glb", headers={"If-None-Match": f'"{model["sha256"]}"'})
        assert r.status_code == 304
    srv.stop()
    assert {o["sha256"] for o in job["outputs"]} <= stored(s3_server, prefix)

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    settings = load_settings(SUPPORT / "system.yaml", data_dir=data_dir, models_file=SUPPORT / "models.yaml",
                             storage={"backend": "s3", "s3": {"bucket": s3_server.bucket, "prefix": prefix,
                                                              "endpoint": s3_server.endpoint}})
    node = Node(settings)
    try:
        assert node.retention.sweep(time.time() + settings.storage.cleanup_after + 1) >= 1
    finally:
        node.store.dispose()
        node.lock.release()
    assert stored(s3_server, prefix) == set(), "expired outputs are deleted from the bucket"


def test_s3_settings_are_checked_at_start() -> None:
    with pytest.raises(Exception, match="storage.backend s3 needs storage.s3.bucket"):
        load_settings(None, storage={"backend": "s3"})
    assert load_settings(None, storage={"backend": "s3", "s3": {"bucket": "b", "prefix": "/a/b/"}}) \
        .storage.s3.prefix == "a/b/"


def test_an_unreachable_store_is_storage_unavailable(tmp_path, monkeypatch, s3_server) -> None:
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    store = S3ArtifactStore(tmp_path, bucket="b", endpoint=f"http://127.0.0.1:{free_port()}")
    src = store.tmp / "x"
    src.write_bytes(b"x")
    with pytest.raises(StorageUnavailable) as e:
        store.put(src)
    assert e.value.http_status == 503 and src.exists(), "a failed put leaves its source to the caller"
