"""The TRELLIS.2 server contract at /compat/trellis, as crossworld's Rust client uses it (its serde strictness and
its retry table, restated in tests/support/compat_clients.py)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from PIL import Image

from client_helpers import IMAGES
from compat_clients import ClientFailed, TrellisClient
from server import SUPPORT, InProcessServer

from pocket3d.config import load_settings
from pocket3d.node import Node

IMAGE = IMAGES / "typical_vehicle_biplane.png"
RESULT_KEYS = {"vertices", "faces", "vertex_colors", "vertex_normals"}


@pytest.fixture
def trellis(compat_server) -> TrellisClient:
    return TrellisClient(f"{compat_server.url}/compat/trellis", base_delay=0.05)


@pytest.fixture
def native(compat_server):
    with compat_server.client() as c:
        yield c


def png(tmp_path, colour):
    path = tmp_path / f"{colour}.png"
    Image.new("RGB", (32, 32), colour).save(path)
    return path


def jobs_count(native) -> int:
    return len(native.get("/jobs", params={"limit": 100}).json()["jobs"])


def test_health_is_ready_with_every_field_typed(trellis):
    status = trellis.health_check()
    assert set(status) == {"status", "trellis_available", "gpu_available", "gpu_name", "model_loaded", "error"}
    assert status["status"] == "ready" and status["model_loaded"] is True and status["error"] is None
    assert status["gpu_available"] is False and status["gpu_name"] is None  # no GPU on this machine
    assert status["trellis_available"] is False  # no TRELLIS.2 model here: the flavour is pinned to a test model
    assert trellis.cli_health() == 0


def test_generate_answers_the_mesh_as_the_client_parses_it(trellis, native):
    result = trellis.generate(TrellisClient.request(IMAGE, resolution="512", tex_slat_sampling_steps=80,
                                                    ss_guidance_strength=0.0))
    assert set(result) == RESULT_KEYS  # never glb_data
    assert len(result["faces"]) > 0 and all(type(i) is int for face in result["faces"] for i in face)
    assert max(i for face in result["faces"] for i in face) < len(result["vertices"])
    assert len(result["vertex_colors"]) == len(result["vertices"])
    assert all(len(c) == 3 and all(0.0 <= x <= 1.0 for x in c) for c in result["vertex_colors"])
    assert len(result["vertex_normals"]) == len(result["vertices"])
    assert trellis.posts == [200]
    job = native.get("/jobs", params={"limit": 1}).json()["jobs"][0]
    knobs = native.get(next(o["url"] for o in job["outputs"] if o["name"] == "params.json")
                       .removeprefix("/api/v1")).json()
    # seed omitted by the client: the server's default 42; the resolution as a number; values clamped to the model
    assert (knobs["seed"], knobs["resolution"], knobs["tex_slat_sampling_steps"], knobs["ss_guidance_strength"]) \
        == (42, 512, 50, 1.0)


def test_accepts_a_data_uri_and_an_integer_resolution(compat_server):
    body = TrellisClient.request(IMAGE, seed=7)
    body["image"] = "data:image/png;base64," + body["image"]
    body["resolution"] = 1024
    body["unknown_option"] = True
    r = httpx.post(f"{compat_server.url}/compat/trellis/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    TrellisClient.parse_result(r.json())


def test_a_deterministic_failure_costs_one_post(trellis, tmp_path):
    with pytest.raises(ClientFailed, match=r"Client error \(422\): .*no object in an image of one colour"):
        trellis.generate(TrellisClient.request(png(tmp_path, (40, 90, 200))))
    assert trellis.posts == [422]


def test_a_bad_body_is_422(trellis, compat_server):
    for body in ({"seed": 1}, {"image": "aGVsbG8=", "resolution": "768"},
                 {"image": "aGVsbG8=", "ss_sampling_steps": 0}):
        r = httpx.post(f"{compat_server.url}/compat/trellis/generate", json=body)
        assert r.status_code == 422 and set(r.json()) == {"detail"}, r.text


def test_a_transient_failure_is_retried_as_new_jobs(trellis, native, tmp_path):
    """Out of memory (here: the test model's pure red image) is a 500: the client tries 3 more times, 1, 2 and 4
    base delays apart, each a job of its own."""
    before = jobs_count(native)
    with pytest.raises(ClientFailed, match="Server error"):
        trellis.generate(TrellisClient.request(png(tmp_path, (255, 0, 0))))
    assert trellis.posts == [500, 500, 500, 500]
    assert jobs_count(native) == before + 4
    failed = native.get("/jobs", params={"limit": 1}).json()["jobs"][0]
    assert failed["error"]["code"] == "OUT_OF_MEMORY"


def test_the_body_is_json_without_base64_bytes(compat_server):
    r = httpx.post(f"{compat_server.url}/compat/trellis/generate", timeout=120,
                   json={"image": base64.b64encode(IMAGE.read_bytes()).decode()})
    assert r.headers["content-type"] == "application/json"
    assert "glb_data" not in json.loads(r.content)


def test_an_owners_full_share_is_still_loading_for_the_client(tmp_path):
    """Every TRELLIS job acts as one owner: when that owner has scheduler.max_jobs_per_owner jobs, the client hears
    503 "still loading" and retries (as for a full queue), it does not fail at once. No scheduler runs here: the
    job that fills the share stays queued."""
    settings = load_settings(SUPPORT / "system.yaml", data_dir=tmp_path / "data",
                             models_file=SUPPORT / "models-compat.yaml", scheduler={"max_jobs_per_owner": 1},
                             compat={"trellis": {"model": "compat_knobs"}})
    node = Node(settings)
    try:
        server = InProcessServer(node, manage_node=False)
        with server as native:
            with open(IMAGE, "rb") as f:
                file_id = native.post("/files", files={"file": ("plane.png", f, "image/png")}).json()["file_id"]
            assert native.post("/mesh/generate", json={"images": [file_id]}).status_code == 202
            trellis = TrellisClient(f"{server.url}/compat/trellis", base_delay=0.01)
            with pytest.raises(ClientFailed, match="Models not loaded"):  # what it says when its retries run out
                trellis.generate(TrellisClient.request(IMAGE))
            assert trellis.posts == [503, 503, 503, 503]
    finally:
        node.stop()
