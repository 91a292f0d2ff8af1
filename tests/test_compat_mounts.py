"""Where and how the compat flavours are served: a flavour at / (compat.root) and on a port of its own
(compat.<flavour>.listen), switched off, with a pinned model, behind a public URL; the synchronous routes' wait and
the cancel when the client goes away; a full queue as the TRELLIS client retries it; and the native gaps the
contracts exposed (shape only, view renders)."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import httpx
import pytest
import trimesh
from PIL import Image

from client_helpers import IMAGES, assert_valid_gltf, finish, wait_final
from compat_clients import HunyuanBlender, Sam3DProbe, SyncTwin, TrellisClient, glb_faces, with_tripo
from server import ServerProcess, free_port

SUPPORT = Path(__file__).parent / "support"
IMAGE = IMAGES / "typical_misc_crate.png"
PUBLIC = "https://3d.example.com/pocket3d"


@pytest.fixture(scope="module")
def mounted(tmp_path_factory) -> ServerProcess:
    """TRELLIS at /, Hunyuan also on a port of its own and pinned to the slow test model (0.2 s a step), SAM 3D
    pinned to a model this machine cannot run, ComfyUI's flavour off, a public URL, room for one job at a time, a
    native ?wait of at most 1 s and synchronous compat routes that wait 6 s."""
    listen = free_port()
    proc = ServerProcess(tmp_path_factory.mktemp("mounts") / "data", models=SUPPORT / "models-compat.yaml", env={
        "POCKET3D_COMPAT__ROOT": "trellis", "POCKET3D_COMPAT__TRELLIS__MODEL": "compat_knobs",
        "POCKET3D_COMPAT__HUNYUAN__LISTEN": str(listen),
        "POCKET3D_COMPAT__HUNYUAN__MODEL": "compat_slow", "POCKET3D_COMPAT__SAM3D__MODEL": "compat_needs_gpu",
        "POCKET3D_COMPAT__COMFY__ENABLED": "false", "POCKET3D_SERVER__PUBLIC_URL": PUBLIC,
        "POCKET3D_SCHEDULER__QUEUE_SIZE": "1", "POCKET3D_SERVER__MAX_WAIT": "1",
        "POCKET3D_COMPAT__WAIT_LIMIT": "6"}).start()
    proc.listen = listen
    yield proc
    proc.stop()


def test_a_flavour_at_the_root_beside_the_native_api(mounted):
    trellis = TrellisClient(mounted.url)  # the client's default: a bare origin
    assert trellis.cli_health() == 0
    result = trellis.generate(TrellisClient.request(IMAGE, resolution="512"))
    assert len(result["faces"]) > 0
    assert httpx.get(f"{mounted.url}/api/v1/system/health").status_code == 200
    assert httpx.get(f"{mounted.url}/compat/trellis/health").json()["status"] == "ready"
    home = httpx.get(mounted.url, follow_redirects=False)  # / is still the web app's, not the flavour's
    assert home.status_code != 404 and "trellis_available" not in home.text


def test_a_flavour_on_its_own_port_waiting_past_max_wait(mounted):
    root = f"http://127.0.0.1:{mounted.listen}"
    client = SyncTwin(root, poll_interval=0.5)
    assert client.health_check().status == "healthy"
    assert glb_faces(client.generate_3d_model_async(IMAGE, num_inference_steps=2)) > 0
    assert httpx.get(f"{root}/api/v1/system/health").status_code == 404  # only the flavour on its port
    # the synchronous route waits past server.max_wait (1 s here) for a job of 10 steps of 0.2 s
    started = time.monotonic()
    glb = HunyuanBlender(root, num_inference_steps=10).generate(image=IMAGE)
    assert glb_faces(glb) > 0 and time.monotonic() - started > 1.5


def test_past_the_wait_limit_the_job_is_cancelled(mounted):
    r = httpx.post(f"{mounted.url}/compat/hunyuan/generate", timeout=60, json={
        "image": base64.b64encode(IMAGE.read_bytes()).decode(), "num_inference_steps": 60})
    assert r.status_code == 404 and "compat.wait_limit" in r.json()["text"]
    with mounted.client() as native:
        job = native.get("/jobs", params={"limit": 1}).json()["jobs"][0]
        assert wait_final(native, job["job_id"], timeout=30)["status"] == "cancelled"


def test_a_refused_protoscale_trigger_reads_failed(mounted):
    """The app ignores trigger answers: a step that could not be submitted (here: the queue is full) shows up as
    status failed with the reason."""
    api = f"{mounted.url}/compat/protoscale"
    with open(IMAGE, "rb") as f:
        job_id = httpx.post(f"{api}/api/upload", files={"file": ("crate.png", f, "image/png")}).json()["job_id"]
    with mounted.client() as native:
        with open(IMAGE, "rb") as f:
            file_id = native.post("/files", files={"file": ("crate.png", f, "image/png")}).json()["file_id"]
        busy = native.post("/mesh/generate", json={"images": [file_id], "model_preference": "compat_slow",
                                                   "parameters": {"steps": 10}}).json()["job_id"]
        httpx.post(f"{api}/api/jobs/{job_id}/generate-3d")
        status = httpx.get(f"{api}/api/jobs/{job_id}/status").json()
        assert status["status"] == "failed" and status["stage"] == "3d_generation" and "queue" in status["error"]
        wait_final(native, busy)


def test_switched_off_and_pinned_to_an_unavailable_model(mounted):
    assert httpx.post(f"{mounted.url}/compat/comfy/customers/storage", json={"file_name": "a.png"}).status_code == 404
    probe = Sam3DProbe(f"{mounted.url}/compat/sam3d")
    r = probe.health()
    assert r.status_code == 503 and r.json() == {"detail": "Model not initialized"}
    r = probe.inference(IMAGE)
    assert r.status_code == 503 and set(r.json()) == {"detail"}


def test_urls_under_the_public_url(mounted):
    async def presign(client):
        return (await client.presign_upload("png")).upload_url

    assert with_tripo(mounted.url, presign, "tsk_x").startswith(f"{PUBLIC}/compat/tripo/uploads/file_")


def test_the_synchronous_wait_cancels_when_the_client_goes_away(mounted):
    """Hunyuan's /generate waits for the job (here: 50 steps of 0.2 s); a client that hangs up cancels it."""
    image = base64.b64encode(IMAGE.read_bytes()).decode()
    gone = threading.Event()

    def impatient() -> None:
        try:
            httpx.post(f"{mounted.url}/compat/hunyuan/generate", timeout=3.0,
                       json={"image": image, "num_inference_steps": 50})
        except httpx.TimeoutException:
            gone.set()  # httpx closes the connection

    thread = threading.Thread(target=impatient)
    thread.start()
    thread.join(30)
    assert gone.is_set()
    with mounted.client() as native:
        job = native.get("/jobs", params={"limit": 1}).json()["jobs"][0]
        assert job["model"] == "compat_slow"
        final = wait_final(native, job["job_id"], timeout=30)
    assert final["status"] == "cancelled"


def test_a_full_queue_is_still_loading_for_the_trellis_client(mounted):
    """With the queue full, TRELLIS answers 503 "still loading": its client retries (1 s, 2 s, 4 s) and gets the
    mesh once the queue has room."""
    with mounted.client() as native:
        with open(IMAGE, "rb") as f:
            file_id = native.post("/files", files={"file": ("crate.png", f, "image/png")}).json()["file_id"]
        busy = native.post("/mesh/generate", json={"images": [file_id], "model_preference": "compat_slow",
                                                   "parameters": {"steps": 6}})
        assert busy.status_code == 202, busy.text
        trellis = TrellisClient(mounted.url)
        result = trellis.generate(TrellisClient.request(IMAGE))
        assert len(result["faces"]) > 0
        assert trellis.posts[0] == 503 and trellis.posts[-1] == 200 and len(trellis.posts) <= 4
        wait_final(native, busy.json()["job_id"])


def test_shape_only_and_view_renders_natively(compat_server, tmp_path):
    """The gaps the contracts exposed, filled for native users: texture false skips the paint stage and leaves the
    colours out; view_renders adds four renders from around the result."""
    with compat_server.client() as native:
        with open(IMAGE, "rb") as f:
            file_id = native.post("/files", files={"file": ("crate.png", f, "image/png")}).json()["file_id"]
        shape = finish(native, "/mesh/generate?wait=30", {"images": [file_id], "texture": False,
                                                             "view_renders": True})
        assert shape["status"] == "succeeded", shape
        assert [s["name"] for s in shape["stages"]] == ["generate_mesh", "export"]
        names = {o["name"] for o in shape["outputs"]}
        assert {"model.glb", "preview.png", "view_0.png", "view_1.png", "view_2.png", "view_3.png"} <= names
        glb = native.get(f"/jobs/{shape['job_id']}/outputs/model.glb").content
        assert_valid_gltf(glb, tmp_path)
        mesh = next(iter(trimesh.load(io.BytesIO(glb), file_type="glb", force="scene").geometry.values()))
        assert mesh.visual.kind is None or mesh.visual.kind != "vertex"
        views = [Image.open(io.BytesIO(native.get(f"/jobs/{shape['job_id']}/outputs/view_{i}.png").content))
                 for i in range(4)]
        assert all(v.size == (512, 512) for v in views)
        # the views differ: front and side of a height field are different pictures
        assert views[0].tobytes() != views[1].tobytes()

        painted = finish(native, "/mesh/generate?wait=30", {"images": [file_id]})
        assert [s["name"] for s in painted["stages"]] == ["generate_mesh", "paint_texture", "export"]
        assert not any(o["name"].startswith("view_") for o in painted["outputs"])
