"""Errors say what to do: where there is an obvious next step, the error body carries a ``hint`` beside the keys
clients already read (error_code, message, details, timestamp, request_id)."""

from __future__ import annotations

import httpx
from client_helpers import IMAGES, finish, upload

KEYS = {"error_code", "message", "details", "timestamp", "request_id", "hint"}


def _error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == KEYS and body["error_code"] == code, body
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def test_a_local_path_instead_of_a_file_id_says_to_upload_it(client: httpx.Client) -> None:
    for ref in ("chair.png", "./renders/chair.png", "/home/me/chair.png", "C:\\Users\\me\\chair.png"):
        body = _error(client.post("/mesh/generate", json={"images": [ref]}), 404, "FILE_NOT_FOUND")
        assert "not a file id" in body["message"] and body["details"]["field"] == "images[0]"
        assert "POST /api/v1/files" in body["hint"] and "data: URI" in body["hint"]
    body = _error(client.post("/segment", json={"mesh": "file_nosuchfile"}), 404, "FILE_NOT_FOUND")
    assert "not found" in body["message"] and "POST /api/v1/files" in body["hint"]
    body = _error(client.post("/mesh/generate", json={"images": ["https://example.com/chair.png"]}), 422,
                  "INPUT_URL_FORBIDDEN")
    assert "URLs are not fetched" in body["message"] and "POST /api/v1/files" in body["hint"]
    assert "inputs.allow_urls" in body["hint"]


def test_a_format_the_model_cannot_write_names_the_formats_it_can(client: httpx.Client) -> None:
    body = _error(client.post("/mesh/generate", json={"text_prompt": "a chair", "model_preference": "test_failing",
                                                      "output_format": "obj"}), 422, "UNSUPPORTED_OUTPUT_FORMAT")
    assert body["details"]["supported_outputs"] == ["glb"] and body["hint"] == "ask for one of glb"


def test_a_format_that_would_lose_what_the_feature_makes_is_refused_the_same_way(client: httpx.Client) -> None:
    """Before any model is chosen: a rig as USDZ, parts as STL (known formats that cannot hold a skin or parts) get
    the code a model's refusal gets, with the formats that can; a name pocket3d does not write stays a bad request."""
    body = _error(client.post("/rig", json={"mesh": "file_x", "output_format": "usdz"}), 422,
                  "UNSUPPORTED_OUTPUT_FORMAT")
    assert body["details"] == {"output_format": "usdz", "supported_outputs": ["glb", "fbx"]}
    assert "skeleton and skin weights" in body["message"] and body["hint"] == "ask for one of glb, fbx"
    body = _error(client.post("/segment", json={"mesh": "file_x", "output_formats": ["glb", "stl"]}), 422,
                  "UNSUPPORTED_OUTPUT_FORMAT")
    assert body["details"]["supported_outputs"] == ["glb", "obj", "fbx", "usdz"] and "parts" in body["message"]
    body = _error(client.post("/rig", json={"mesh": "file_x", "output_format": "dwg"}), 422, "INVALID_REQUEST")
    assert body["hint"] == "ask for one of glb, fbx"


def test_an_unknown_model_says_where_the_models_are_listed(client: httpx.Client) -> None:
    body = _error(client.post("/mesh/generate", json={"text_prompt": "a chair", "model_preference": "trellis-xl"}),
                  422, "UNKNOWN_MODEL")
    assert "GET /api/v1/system/models" in body["hint"] and "test_heightfield" in body["hint"]


def test_a_field_of_another_api_suggests_ours(client: httpx.Client) -> None:
    body = _error(client.post("/mesh/generate", json={"prompt": "a chair"}), 422, "INVALID_REQUEST")
    assert "did you mean 'text_prompt'?" in body["hint"]
    body = _error(client.post("/rig", json={"mesh": "file_x", "output_fromat": "fbx"}), 422, "INVALID_REQUEST")
    assert "did you mean 'output_format'?" in body["hint"]


def test_parameters_a_model_refuses_point_to_its_schema(client: httpx.Client) -> None:
    file_id = upload(client, IMAGES / "typical_creature_elephant.png")["file_id"]
    body = _error(client.post("/mesh/generate", json={"images": [file_id], "model_preference": "builtin_silhouette",
                                                      "parameters": {"thicknes": 1}}), 422, "INVALID_PARAMETERS")
    assert "parameters_schema" in body["hint"] and "builtin_silhouette" in body["hint"]


def test_downloads_and_routes_that_do_not_exist_say_what_does(client: httpx.Client) -> None:
    file_id = upload(client, IMAGES / "typical_creature_elephant.png")["file_id"]
    job = finish(client, "/mesh/generate?wait=30", {"images": [file_id]})
    body = _error(client.get(f"/jobs/{job['job_id']}/outputs/model.fbx"), 404, "OUTPUT_NOT_FOUND")
    assert "model.glb" in body["hint"] and "preview.png" in body["hint"]
    body = _error(client.get("/jobs/job_nosuchjob"), 404, "JOB_NOT_FOUND")
    assert "GET /api/v1/jobs" in body["hint"]
    body = _error(client.get("/mesh/generat"), 404, "NOT_FOUND")
    assert "/docs" in body["hint"]
    body = _error(client.get("/mesh/generate"), 405, "METHOD_NOT_ALLOWED")
    assert "POST" in body["hint"]
