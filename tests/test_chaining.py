"""A finished job's output as the input of another job (job_…/model.glb), and other formats of a finished job's
result without running its model again (POST /jobs/{id}/convert)."""

from __future__ import annotations

import httpx
from client_helpers import IMAGES, finish, submit, upload, wait_final


def _files(client: httpx.Client) -> int:
    return len(client.get("/files", params={"limit": 100}).json()["files"])


def test_a_job_output_feeds_the_next_job_without_a_download(client: httpx.Client) -> None:
    file_id = upload(client, IMAGES / "typical_misc_crate.png")["file_id"]
    source = submit(client, "/mesh/generate", {"images": [file_id], "parameters": {"delay": 1.5}})["job_id"]
    early = client.post("/segment", json={"mesh": f"{source}/model.glb"})
    assert early.status_code == 409 and early.json()["error_code"] == "OUTPUT_NOT_READY", early.text
    assert f"GET /api/v1/jobs/{source}" in early.json()["hint"]
    assert wait_final(client, source)["status"] == "succeeded"

    uploads = _files(client)
    chained = finish(client, "/segment?wait=30", {"mesh": f"{source}/model.glb"})
    assert chained["status"] == "succeeded", chained
    assert _files(client) == uploads, "nothing was uploaded again"
    r = client.get(chained["outputs"][0]["url"].removeprefix("/api/v1"))
    assert r.headers["content-disposition"] == 'attachment; filename="typical_misc_crate-segmented.glb"'

    cases = [
        (source, 422, "INVALID_REQUEST", f"{source}/model.glb"),
        (f"{source}/model.fbx", 404, "OUTPUT_NOT_FOUND", f"{source}/preview.png"),
        (f"{source}/preview.png", 422, "INVALID_REQUEST", "images go in images"),
        ("job_0000000000000000000000000000/model.glb", 404, "JOB_NOT_FOUND", "GET /api/v1/jobs"),
    ]
    for ref, status, code, hint in cases:
        r = client.post("/segment", json={"mesh": ref})
        assert r.status_code == status and r.json()["error_code"] == code, (ref, r.text)
        assert hint in r.json()["hint"], (ref, r.text)


def test_convert_writes_other_formats_without_running_the_model(client: httpx.Client) -> None:
    file_id = upload(client, IMAGES / "T.png")["file_id"]
    slow = submit(client, "/mesh/generate", {"images": [file_id], "parameters": {"delay": 1}})["job_id"]
    r = client.post(f"/jobs/{slow}/convert", json={"output_formats": ["obj"]})
    assert r.status_code == 409 and r.json()["error_code"] == "OUTPUT_NOT_READY", r.text
    source = wait_final(client, slow)
    assert source["status"] == "succeeded"

    r = client.post(f"/jobs/{slow}/convert", params={"wait": 30}, json={"output_formats": ["obj", "stl"]})
    assert r.status_code == 200, r.text
    converted = r.json()
    assert converted["job_id"] != slow and converted["status"] == "succeeded"
    assert [s["name"] for s in converted["stages"]] == ["export"], "no model stage: the model did not run again"
    assert {o["name"] for o in converted["outputs"]} == {"model.obj.zip", "model.stl", "preview.png"}
    assert client.get(f"/jobs/{slow}").json()["outputs"] == source["outputs"], "the source job is as it was"
    r = client.get(next(o["url"] for o in converted["outputs"] if o["name"] == "model.stl").removeprefix("/api/v1"))
    assert r.status_code == 200 and r.headers["content-disposition"] == 'attachment; filename="T.stl"'

    again = client.post(f"/jobs/{converted['job_id']}/convert", params={"wait": 30}, json={"output_formats": ["ply"]})
    assert again.status_code == 200 and again.json()["status"] == "succeeded", "a conversion converts too"

    segmented = finish(client, "/segment?wait=30", {"mesh": f"{slow}/model.glb"})
    for formats, words in ((["stl"], "glb"), (["obj"], "glb")):  # stl drops the parts; the model lists only glb
        r = client.post(f"/jobs/{segmented['job_id']}/convert", json={"output_formats": formats})
        assert r.status_code == 422 and r.json()["error_code"] == "UNSUPPORTED_OUTPUT_FORMAT", r.text
        assert words in r.json()["hint"]
    r = client.post("/jobs/job_0000000000000000000000000000/convert", json={"output_formats": ["glb"]})
    assert r.status_code == 404 and r.json()["error_code"] == "JOB_NOT_FOUND"
    r = client.post(f"/jobs/{slow}/convert", json={"output_formats": []})
    assert r.status_code == 422
