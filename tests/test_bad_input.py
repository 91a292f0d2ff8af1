"""Bad input gets a 4xx with the error body: never a 500, a hang, a half-written job or a temp file."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
import trimesh
from client_helpers import IMAGES, MESHES, finish, leftover_temp_files, upload
from PIL import Image

ERROR_KEYS = {"error_code", "message", "details", "timestamp", "request_id"}  # and "hint" where there is one


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert ERROR_KEYS <= set(body) <= ERROR_KEYS | {"hint"} and body["error_code"] == code, body
    assert body.get("hint", "x"), "a hint, when given, says something"
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def job_count(client: httpx.Client) -> int:
    return len(client.get("/jobs", params={"limit": 100}).json()["jobs"])


@pytest.fixture
def small_server(make_server, tmp_path):
    """Its own server with small limits, so the oversized cases stay small."""
    return make_server(env={"POCKET3D_STORAGE__MAX_FILE_SIZE": "2MB",
                            "POCKET3D_SERVER__MAX_REQUEST_SIZE": "3MB",
                            "POCKET3D_STORAGE__MAX_IMAGE_PIXELS": "1200000",
                            "POCKET3D_STORAGE__MAX_MESH_FACES": "50000"})


def test_bad_uploads(small_server) -> None:
    data_dir = small_server.data_dir
    with small_server.client() as c:
        png = (IMAGES / "typical_misc_crate.png").read_bytes()

        # not multipart at all
        assert_error(c.post("/files", content=png, headers={"content-type": "image/png"}),
                     415, "UNSUPPORTED_MEDIA_TYPE")
        # multipart, but the content is no image or mesh (the name says .png)
        assert_error(c.post("/files", files={"file": ("x.png", b"%PDF-1.7 not an image at all\n" * 20)}),
                     415, "UNSUPPORTED_MEDIA_TYPE")
        # a PNG cut in half
        body = assert_error(c.post("/files", files={"file": ("cut.png", png[: len(png) // 2])}), 422, "INVALID_IMAGE")
        assert "truncated" in body["message"] or "decode" in body["message"]
        assert str(data_dir) not in body["message"] and "/tmp" not in body["message"], "no server paths leak"
        body = assert_error(c.post("/files", files={"file": ("junk.png", b"\x89PNG\r\n\x1a\n" + b"junk" * 10)}),
                            422, "INVALID_IMAGE")
        assert str(data_dir) not in body["message"] and "upload-" not in body["message"], body
        # empty file, and no body at all
        assert_error(c.post("/files", files={"file": ("empty.png", b"")}), 400, "EMPTY_UPLOAD")
        assert_error(c.post("/files", content=b"", headers={"content-type": "multipart/form-data; boundary=x"}),
                     422, "INVALID_REQUEST")
        # a body cut off before its closing boundary, and a boundary longer than any parser takes
        cut = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.obj"\r\n\r\n'
               + (MESHES / "typical_humanoid_goblin.obj").read_bytes()[:20000])
        assert_error(c.post("/files", content=cut, headers={"content-type": "multipart/form-data; boundary=xyz"}),
                     422, "INVALID_REQUEST")
        assert_error(c.post("/files", content=b"--" + b"b" * 300 + b"--\r\n",
                            headers={"content-type": "multipart/form-data; boundary=" + "b" * 300}),
                     422, "INVALID_REQUEST")
        # a form without the 'file' field
        assert_error(c.post("/files", files={"image": ("a.png", png)}), 422, "INVALID_REQUEST")
        # larger than storage.max_file_size (2 MB): refused by Content-Length, and while streaming without one
        big = b"\x89PNG\r\n\x1a\n" + b"\0" * 3_000_000
        assert_error(c.post("/files", files={"file": ("big.png", big)}), 413, "FILE_TOO_LARGE")

        def chunks():
            boundary = b"--b0undary"
            yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
            for _ in range(40):
                yield b"\0" * 65536
            yield b"\r\n" + boundary + b"--\r\n"
        r = c.post("/files", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b0undary"})
        assert r.status_code == 413 and r.json()["error_code"] in ("FILE_TOO_LARGE", "REQUEST_TOO_LARGE")
        # more pixels than storage.max_image_pixels (1.2 Mpx): refused before decoding
        huge = data_dir.parent / "huge.png"
        Image.new("RGB", (1300, 1000), "red").save(huge)
        assert_error(c.post("/files", files={"file": ("huge.png", huge.read_bytes())}), 413, "IMAGE_TOO_LARGE")
        # a mesh that does not parse
        assert_error(c.post("/files", files={"file": ("bad.obj", b"v 0 0 0\nv 1 0 0\nf 1 2 7\n")}), 422,
                     "INVALID_MESH")
        assert_error(c.post("/files", files={"file": ("nan.obj", b"v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")}),
                     422, "INVALID_MESH")
        assert_error(c.post("/files", files={"file": ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n")}), 422,
                     "INVALID_MESH")  # vertices, zero faces
        glb = io.BytesIO()
        trimesh.creation.box().export(glb, file_type="glb")
        assert_error(c.post("/files", files={"file": ("cut.glb", glb.getvalue()[:200])}), 422, "INVALID_MESH")
        # more faces than storage.max_mesh_faces (50,000)
        sphere = io.BytesIO()
        trimesh.creation.icosphere(subdivisions=6).export(sphere, file_type="ply")
        body = assert_error(c.post("/files", files={"file": ("sphere.ply", sphere.getvalue())}), 413, "MESH_TOO_LARGE")
        assert body["details"]["faces"] == 81920

        assert c.get("/jobs").json()["jobs"] == []
    assert leftover_temp_files(data_dir) == []
    assert not list((data_dir / "artifacts").rglob("*.*")), "nothing refused reached the artifact store"
    assert not [p for p in (data_dir / "artifacts").rglob("*") if p.is_file()]


def test_bad_submissions(small_server) -> None:
    data_dir = small_server.data_dir
    with small_server.client() as c:
        image_id = upload(c, IMAGES / "T.png")["file_id"]
        mesh_id = upload(c, MESHES / "typical_humanoid_goblin.obj")["file_id"]

        assert_error(c.post("/mesh/generate", content=b'{"images": [', headers={"content-type": "application/json"}),
                     400, "INVALID_JSON")
        assert_error(c.post("/mesh/generate", json={}), 422, "INVALID_REQUEST")
        assert_error(c.post("/mesh/generate", json={"images": [image_id], "qualty": "high"}), 422, "INVALID_REQUEST")
        assert_error(c.post("/mesh/generate", json={"images": [image_id], "output_format": "dwg"}), 422,
                     "INVALID_REQUEST")
        body = assert_error(c.post("/mesh/generate", json={"images": [image_id], "model_preference": "nope"}), 422,
                            "UNKNOWN_MODEL")
        assert "test_heightfield" in body["details"]["models_for_feature"]
        # a model of another feature
        assert_error(c.post("/mesh/generate", json={"images": [image_id], "model_preference": "test_subdivide_rig"}),
                     422, "UNKNOWN_MODEL")
        # a model that cannot take these inputs
        assert_error(c.post("/mesh/generate", json={"text_prompt": "a cat", "model_preference": "test_heightfield"}),
                     422, "MODEL_INPUT_MISMATCH")
        # a mesh format the model does not list (the rig test model takes obj/glb; upload a PLY)
        ply = data_dir.parent / "goblin.ply"
        import trimesh
        trimesh.load(MESHES / "typical_humanoid_goblin.obj", force="mesh").export(ply)
        ply_id = upload(c, ply)["file_id"]
        assert_error(c.post("/rig", json={"mesh": ply_id}), 422, "NO_MODEL_FOR_REQUEST")
        # a model that exists but cannot run here
        body = assert_error(c.post("/mesh/generate", json={"images": [image_id], "model_preference": "test_needs_gpu"}),
                            503, "MODEL_UNAVAILABLE")
        assert "cuda" in body["message"]
        assert_error(c.post("/mesh/generate", json={"images": [image_id], "output_format": "ply",
                                                    "model_preference": "test_passthrough"}), 422,
                     "UNSUPPORTED_OUTPUT_FORMAT")
        assert_error(c.post("/mesh/generate", json={"images": [image_id], "parameters": {"grid": 1}}), 422,
                     "INVALID_PARAMETERS")
        assert_error(c.post("/mesh/generate", json={"images": [image_id], "parameters": {"gird": 8}}), 422,
                     "INVALID_PARAMETERS")
        # inputs of the wrong kind, unknown ids, URLs, broken data URIs
        assert_error(c.post("/mesh/generate", json={"images": [mesh_id]}), 422, "INVALID_REQUEST")
        assert_error(c.post("/segment", json={"mesh": image_id}), 422, "INVALID_REQUEST")
        assert_error(c.post("/mesh/generate", json={"images": ["file_doesnotexist"]}), 404, "FILE_NOT_FOUND")
        assert_error(c.post("/mesh/generate", json={"images": ["https://example.com/cat.png"]}), 422,
                     "INPUT_URL_FORBIDDEN")  # URL inputs are off unless inputs.allow_urls
        assert_error(c.post("/mesh/generate", json={"images": ["data:image/png;base64,@@@"]}), 422,
                     "INVALID_DATA_URI")
        truncated = (IMAGES / "T.png").read_bytes()[:5000]
        assert_error(c.post("/mesh/generate",
                            json={"images": ["data:image/png;base64," + base64.b64encode(truncated).decode()]}),
                     422, "INVALID_IMAGE")
        # a JSON body over server.max_request_size (3 MB)
        r = c.post("/mesh/generate", json={"images": ["data:image/png;base64," + "A" * 4_000_000]})
        assert_error(r, 413, "REQUEST_TOO_LARGE")
        # odd headers on reads: a non-ASCII digit as Last-Event-ID, Range past the end, a malformed Range
        done = finish(c, "/mesh/generate?wait=20", {"images": [upload(c, IMAGES / "T.png")["file_id"]]})
        with c.stream("GET", f"/jobs/{done['job_id']}/events", headers={"Last-Event-ID": "\u00b2".encode("latin-1")}) as r:
            assert r.status_code == 200
        url = done["outputs"][0]["url"].removeprefix("/api/v1")
        r = c.get(url, headers={"Range": "bytes=99999999-"})
        assert_error(r, 416, "RANGE_NOT_SATISFIABLE")
        assert r.headers["content-range"] == f"bytes */{done['outputs'][0]['size']}"
        for malformed in ("bytes=abc", "bytes=5-2", "items=0-1"):
            r = c.get(url, headers={"Range": malformed})
            assert r.status_code == 200 and len(r.content) == done["outputs"][0]["size"], malformed
        # unknown routes and methods use the same body
        assert_error(c.get("/nowhere"), 404, "NOT_FOUND")
        assert_error(c.delete("/jobs"), 405, "METHOD_NOT_ALLOWED")

        jobs = c.get("/jobs").json()["jobs"]
        assert [j["job_id"] for j in jobs] == [done["job_id"]], "no refused request left a job row"
        stored = {p.name for p in (data_dir / "artifacts").rglob("*") if p.is_file()}
    assert leftover_temp_files(data_dir) == []
    # the three uploads, the finished job's mesh (intermediate and final are one blob, passed through), preview
    assert len(stored) == 5, "no refused data URI was kept"
