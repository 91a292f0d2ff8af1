"""ProtoScale-AI's backend at /compat/protoscale: its app's requests over HTTP with the app's strictness, and its
flows A and B from a page on another origin in headless Chromium (CORS on every answer, errors included)."""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from PIL import Image

from client_helpers import IMAGES, assert_valid_gltf

IMAGE = IMAGES / "typical_building_mushroom.png"
STATUS_KEYS = {"job_id", "status", "progress", "stage", "error"}


@pytest.fixture
def api(compat_server) -> str:
    return f"{compat_server.url}/compat/protoscale"


def upload(api: str, path=IMAGE, enhanced: bool = False) -> str:
    with open(path, "rb") as f:
        r = httpx.post(f"{api}/api/upload", files={"file": (path.name, f, "image/png")},
                       data={"remove_bg": "true", "enhanced_detail": "true" if enhanced else "false"})
    assert r.status_code == 200 and set(r.json()) == {"job_id"}, r.text
    return r.json()["job_id"]


def status(api: str, job_id: str) -> dict:
    r = httpx.get(f"{api}/api/jobs/{job_id}/status")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == STATUS_KEYS, body
    assert type(body["progress"]) is int and 0 <= body["progress"] <= 100
    assert body["status"] in ("pending", "processing", "completed", "failed")
    assert body["stage"] in (None, "multiview", "3d_generation")
    return body


def poll(api: str, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = status(api, job_id)
        if body["status"] in ("completed", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"{job_id} still {body}")


def test_flow_a_over_http(api):
    job_id = upload(api, enhanced=True)
    assert status(api, job_id) == {"job_id": job_id, "status": "pending", "progress": 0, "stage": None,
                                   "error": None}
    assert httpx.get(f"{api}/api/jobs/{job_id}/result/view_0.png").json() == {"detail": "View not ready"}
    httpx.post(f"{api}/api/jobs/{job_id}/generate-multiangle")
    # the trigger switched the job before it answered: the very next poll is not the old state
    assert status(api, job_id)["status"] in ("processing", "completed")
    done = poll(api, job_id)
    assert (done["status"], done["progress"], done["stage"]) == ("completed", 100, "multiview")
    for i in range(4):
        view = httpx.get(f"{api}/api/jobs/{job_id}/result/view_{i}.png")
        assert view.status_code == 200 and view.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(view.content)).size == (512, 512)
    assert httpx.get(f"{api}/api/jobs/{job_id}/result/model.glb").json() == {"detail": "Model not ready"}
    httpx.post(f"{api}/api/jobs/{job_id}/generate-3d")
    after = status(api, job_id)  # the 3D step reuses the views' mesh: completed at once, and the model is there
    assert after["stage"] == "3d_generation"
    if after["status"] == "completed":
        assert httpx.get(f"{api}/api/jobs/{job_id}/result/model.glb").status_code == 200
    assert poll(api, job_id)["status"] == "completed"
    model = httpx.get(f"{api}/api/jobs/{job_id}/result/model.glb")
    assert model.headers["content-type"] == "model/gltf-binary" and model.content[:4] == b"glTF"
    assert httpx.get(f"{api}/api/jobs/{job_id}/result/other.txt").status_code == 400
    thumbnail = httpx.get(f"{api}/api/jobs/{job_id}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.content[:8] == b"\x89PNG\r\n\x1a\n"
    history = httpx.get(f"{api}/api/jobs").json()
    mine = next(item for item in history if item["job_id"] == job_id)
    assert set(mine) == {"job_id", "has_model", "created_at"} and mine["has_model"] is True


def test_flow_b_never_reads_completed_before_the_model_exists(api, tmp_path):
    job_id = upload(api)
    httpx.post(f"{api}/api/jobs/{job_id}/generate-3d")
    seen = []
    while True:
        body = status(api, job_id)
        seen.append(body["status"])
        if body["status"] == "completed":  # the app fetches the model at once
            model = httpx.get(f"{api}/api/jobs/{job_id}/result/model.glb")
            assert model.status_code == 200
            assert_valid_gltf(model.content, tmp_path)
            break
        assert body["status"] == "processing" and body["stage"] == "3d_generation", body
    assert seen[0] != "pending"  # the trigger switched the job before it answered


def test_errors_and_refusals(api, tmp_path):
    assert httpx.get(f"{api}/health").json() == {"status": "ok"}
    r = httpx.get(f"{api}/api/jobs/ps_unknown/status")
    assert r.status_code == 404 and r.json() == {"detail": "Job not found"}
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with open(text, "rb") as f:
        r = httpx.post(f"{api}/api/upload", files={"file": ("notes.txt", f, "text/plain")})
    assert r.status_code == 400 and set(r.json()) == {"detail"}
    blank = tmp_path / "blank.png"
    Image.new("RGB", (40, 40), (90, 90, 90)).save(blank)
    job_id = upload(api, blank)
    httpx.post(f"{api}/api/jobs/{job_id}/generate-3d")
    failed = poll(api, job_id)
    assert failed["status"] == "failed" and "no object" in failed["error"]
    # the history lists the models the app can open, as the original did: not this failed one, nor an upload alone
    pending = upload(api)
    listed = [item["job_id"] for item in httpx.get(f"{api}/api/jobs").json()]
    assert job_id not in listed and pending not in listed


def test_cors_on_answers_and_errors(api, page_site):
    origin = {"Origin": page_site.origin}
    for r in (httpx.get(f"{api}/health", headers=origin), httpx.get(f"{api}/api/jobs/ps_x/status", headers=origin)):
        assert r.headers["access-control-allow-origin"] == page_site.origin


@pytest.mark.browser
def test_flows_in_a_browser_from_another_origin(api, page_site, browser):
    page = browser.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.on("pageerror", lambda error: console.append(str(error)))
    page.goto(f"{page_site.origin}/protoscale.html?api={api}")
    png = base64.b64encode(IMAGE.read_bytes()).decode()

    flow_a = page.evaluate("([png]) => runFlow('A', png, true)", [png])
    assert "error" not in flow_a, (flow_a, console)
    assert flow_a["widths"] == [512] * 4 and flow_a["modelStatus"] == 200 and flow_a["magic"] == "glTF"
    assert page.inner_text("#state") == "Model ready"

    flow_b = page.evaluate("([png]) => runFlow('B', png, false)", [png])
    assert flow_b.get("magic") == "glTF", (flow_b, console)
    polls = page.evaluate("window.polls")
    after_3d = [p["body"] for p in polls if p["after"] == "generate-3d" and p["body"]["job_id"] == flow_b["jobId"]]
    assert after_3d[0]["status"] != "pending" and after_3d[-1]["status"] == "completed"
    assert all(type(p["body"]["progress"]) is int for p in polls)

    blank = io.BytesIO()
    Image.new("RGB", (40, 40), (120, 60, 200)).save(blank, format="PNG")
    failed = page.evaluate("([png]) => runFlow('B', png, false)", [base64.b64encode(blank.getvalue()).decode()])
    assert "no object" in failed["error"]
    assert page.inner_text("#state").startswith("Generation Failed: ")

    assert page.evaluate("readError()") == {"status": 404, "body": {"detail": "Job not found"}}
    assert not [m for m in console if "CORS" in m or "Failed to fetch" in m], console
    page.close()
