"""What a job tells its owner: the request as sent, its stages, the model's latest message, and an ETA from the
measured time of that model at that quality; on real servers with the test-only models (tests/support/models.yaml).
The built-in models' warnings are in test_builtin_features, their progress steps in test_builtin_models."""

from __future__ import annotations

import base64
import time

import httpx
from client_helpers import IMAGES, finish, submit, upload, wait_final


def _poll(client: httpx.Client, job_id: str, until, timeout: float = 30) -> dict:  # noqa: ANN001 - a predicate
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if until(job) or job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: not there in {timeout} s: {job}")


def test_the_view_echoes_the_request_and_shows_stages_and_the_models_message(client: httpx.Client) -> None:
    png = (IMAGES / "T.png").read_bytes()
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    body = {"images": [data_uri], "model_preference": "test_heightfield", "output_format": "ply", "quality": "low",
            "texture_resolution": 512, "priority": 2, "parameters": {"delay": 1.2, "steps": 4}}
    job_id = submit(client, "/mesh/generate", body)["job_id"]
    running = _poll(client, job_id, lambda j: j["status"] == "running" and j["message"])
    assert running["message"] == "thinking slowly", "the model's progress message, while it runs"
    assert running["stages"][0]["seconds"] is None, "no run time before the stage ends"
    job = wait_final(client, job_id)
    assert job["status"] == "succeeded"
    echo = job["input"]
    shown = echo["images"][0]
    assert shown.startswith("data:image/png;base64,iVBOR") and shown.endswith(f"({len(data_uri)} characters)")
    assert len(shown) < 100, "a data URI is shortened, not stored twice"
    assert {k: echo[k] for k in body if k not in ("images", "output_format")} == {
        k: v for k, v in body.items() if k not in ("images", "output_format")}
    assert echo["output_formats"] == ["ply"] and "output_format" not in echo, "the formats written, once"
    assert echo["text_prompt"] is None and echo["views"] is None
    assert [(s["name"], s["model"], s["device"]) for s in job["stages"]] == [
        ("generate_mesh", "test_heightfield", "cpu"), ("export", None, None)]
    model_stage = job["stages"][0]
    assert model_stage["seconds"] >= 1.0, "it slept 1.2 s in its steps"
    assert model_stage["started_at"] < model_stage["finished_at"] <= job["finished_at"]
    assert job["message"] == "thinking slowly" and job["warnings"] == [] and job["orientation"] is None
    file_ids = [upload(client, IMAGES / "T.png")["file_id"]]
    job = finish(client, "/mesh/generate?wait=30", {"images": file_ids, "output_formats": ["obj", "glb"]})
    assert job["input"]["images"] == file_ids, "a file id is shown as given"
    assert job["input"]["output_formats"] == ["obj", "glb"] and "output_format" not in job["input"], \
        "not also the shorthand's default, as if both had been sent"
    assert client.delete(f"/files/{file_ids[0]}").status_code == 204  # the shared server's blobs as they were


def test_named_views_are_checked_and_echoed(client: httpx.Client) -> None:
    front = upload(client, IMAGES / "T.png")["file_id"]
    job = finish(client, "/mesh/generate?wait=30", {"views": {"front": front}})
    assert job["status"] == "succeeded" and job["input"]["views"] == {"front": front}
    cases = [({"views": {"front": front}, "images": [front]}, "images or views"),
             ({"views": {}}, "front"),
             ({"views": {"top": front}}, "top"),
             ({"views": {"front": front, "back": front}, "parameters": {"azimuths": [0, 180]}}, "views or parameters"),
             ({"views": {"left": "file_nope"}}, "views.left")]
    for body, words in cases:
        r = client.post("/mesh/generate", json=body)
        assert r.status_code in (404, 422) and words in r.text, (body, r.text)
    assert client.delete(f"/files/{front}").status_code == 204


def _eta_of_a_new_job(client: httpx.Client, quality: str, delay: float) -> float | None:
    """Submit a job and read its ETA at once, while it waits or has just begun."""
    image = "data:image/png;base64," + base64.b64encode((IMAGES / "T.png").read_bytes()).decode()
    job_id = submit(client, "/mesh/generate", {"images": [image], "quality": quality,
                                               "parameters": {"delay": delay, "steps": 10}})["job_id"]
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] in ("queued", "running"), job
    wait_final(client, job_id)
    return job["eta_seconds"]


def test_the_eta_is_the_measured_time_of_that_model_at_that_quality(make_server, tmp_path) -> None:
    """At quality high a model may take many times its low time: the ETA of a high job comes from high jobs (and
    what was measured outlives a restart: test_store)."""
    data_dir = tmp_path / "data"
    with make_server(data_dir).client() as c:
        image = upload(c, IMAGES / "T.png")["file_id"]
        first = submit(c, "/mesh/generate", {"images": [image], "quality": "high",
                                             "parameters": {"delay": 1.0, "steps": 10}})["job_id"]
        assert c.get(f"/jobs/{first}").json()["eta_seconds"] is None, "nothing measured yet: no number"
        assert wait_final(c, first)["stages"][0]["seconds"] >= 1.0, "(and the worker's start, the first time)"
        high = 1.0  # what the model itself spends at this quality: the ETA is learned from the model's run time
        assert _eta_of_a_new_job(c, "low", 0.1) is None, "measured at high only: no guess for low"
        low_eta = _eta_of_a_new_job(c, "low", 0.1)
        high_eta = _eta_of_a_new_job(c, "high", 1.0)
        assert low_eta is not None and low_eta < 0.5 * high, (low_eta, high)
        assert high_eta is not None and high_eta > 0.6 * high, (high_eta, high)
