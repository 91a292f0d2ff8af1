"""The compat flavours with auth on: keyless clients act as the owner compat.<flavour>.owner names (401 in their own
shape without one), Tripo and Comfy authenticate as natively (Tripo's tsk_ prefix taken off), result URLs are
signed and work without credentials until they expire, another owner's ids are not found, and a compat job is an
ordinary job of its owner (listed natively, with its events)."""

from __future__ import annotations

import base64
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from client_helpers import IMAGES, follow_events
from compat_clients import ClientFailed, ComfyTripoNode, Sam3DProbe, TrellisClient, glb_faces, with_tripo
from pocket3d.api.compat.base import Signer
from pocket3d.api.keys import create_key
from pocket3d.jobs.store import Store
from server import ServerProcess

tripo3d = pytest.importorskip("tripo3d")
from tripo3d import TripoAPIError, TripoClient  # noqa: E402
from tripo3d.models import TaskStatus  # noqa: E402

SUPPORT = Path(__file__).parent / "support"
IMAGE = IMAGES / "typical_misc_crate.png"
SECRET = "compat-test-signing-secret-0123456789"


def start(data_dir: Path, owners: dict[str, str], extra: dict[str, str] | None = None) -> tuple[ServerProcess, dict]:
    """An auth-on server with two keys (alice, bob) and one for the keyless flavours' owner, made before it
    starts."""
    data_dir.mkdir(parents=True)
    store = Store(f"sqlite:///{data_dir / 'pocket3d.db'}")
    store.create_schema()
    keys = {name: create_key(store, name=name, role="user")[1] for name in ("alice", "bob", "studio")}
    store.dispose()
    env = {"POCKET3D_AUTH__ENABLED": "true", "POCKET3D_COMPAT__SIGNING_SECRET": SECRET, **(extra or {})}
    env.update({f"POCKET3D_COMPAT__{flavour.upper()}__OWNER": owner for flavour, owner in owners.items()})
    proc = ServerProcess(data_dir, models=SUPPORT / "models-compat.yaml", env=env).start()
    return proc, keys


@pytest.fixture(scope="module")
def no_owners(tmp_path_factory):
    proc, keys = start(tmp_path_factory.mktemp("auth-a") / "data", {})
    proc.keys = keys
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """The keyless flavours act as the owner "studio"; TRELLIS is pinned to a model this machine cannot run."""
    owners = {f: "studio" for f in ("hunyuan", "trellis", "protoscale", "sam3d")}
    proc, keys = start(tmp_path_factory.mktemp("auth-b") / "data", owners,
                       {"POCKET3D_COMPAT__TRELLIS__MODEL": "compat_needs_gpu"})
    proc.keys = keys
    yield proc
    proc.stop()


def tripo(server: ServerProcess, fn, key: str):
    return with_tripo(server.url, fn, key)


def resigned(url: str, expires: float) -> str:
    """The same link signed by the server's secret with another expiry (what the server would hand out then)."""
    parts = urlsplit(url)
    query = Signer(SECRET.encode()).query(parts.path, expires, **{
        k: v[0] for k, v in parse_qs(parts.query).items() if k not in ("expires", "signature")})
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{query}"


def test_keyless_flavours_without_an_owner_answer_401_in_their_shape(no_owners):
    base = f"{no_owners.url}/compat"
    image = base64.b64encode(IMAGE.read_bytes()).decode()
    r = httpx.post(f"{base}/hunyuan/generate", json={"image": image})
    assert r.status_code == 401 and set(r.json()) == {"text", "error_code"} and "compat.hunyuan.owner" in r.text
    r = httpx.get(f"{base}/hunyuan/status/job_x")
    assert r.status_code == 401 and set(r.json()) == {"detail"}
    r = httpx.post(f"{base}/trellis/generate", json=TrellisClient.request(IMAGE))
    assert r.status_code == 401 and set(r.json()) == {"detail"}
    with open(IMAGE, "rb") as f:
        r = httpx.post(f"{base}/protoscale/api/upload", files={"file": ("a.png", f, "image/png")})
    assert r.status_code == 401 and set(r.json()) == {"detail"}
    r = Sam3DProbe(f"{base}/sam3d").inference(IMAGE)
    assert r.status_code == 401 and set(r.json()) == {"detail"}
    # health stays public
    assert httpx.get(f"{base}/hunyuan/health").status_code == 200


def test_tripo_authenticates_with_the_tsk_prefix_and_signs_its_urls(no_owners, tmp_path):
    alice, bob = no_owners.keys["alice"], no_owners.keys["bob"]
    r = httpx.get(f"{no_owners.url}/compat/tripo/v3/account/balance")
    assert r.status_code == 401 and r.json()["code"] != 0
    with pytest.raises(TripoAPIError):
        tripo(no_owners, lambda c: c.get_balance(), "tsk_p3d_nope_nope")

    async def flow(client: TripoClient):
        task = await client.wait_for_task(await client.image_to_model(str(IMAGE)), polling_interval=0.3)
        return task, await client.download_task_models(task, str(tmp_path))

    task, files = tripo(no_owners, flow, f"tsk_{alice}")
    assert task.status == TaskStatus.SUCCESS and glb_faces(Path(files["model"]).read_bytes()) > 0

    # another owner's task is not found
    with pytest.raises(TripoAPIError, match="not found"):
        tripo(no_owners, lambda c: c.get_task(task.task_id), f"tsk_{bob}")

    # the result URL works without a key until it expires, and not after; altered, it is refused
    url = task.output.model_url
    assert httpx.get(url).status_code == 200
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    with httpx.Client(base_url=f"{no_owners.url}/api/v1", headers={"Authorization": f"Bearer {alice}"}) as native:
        job = native.get(f"/jobs/{task.task_id}").json()
    assert abs(expires - datetime.fromisoformat(job["expires_at"]).timestamp()) < 1  # valid as long as the output
    assert httpx.get(resigned(url, time.time() + 60)).status_code == 200
    expired = httpx.get(resigned(url, time.time() - 1))
    assert expired.status_code == 404 and expired.json()["code"] != 0
    assert httpx.get(url.replace("model.glb", "preview.png")).status_code == 403


def test_a_tripo_job_is_a_native_job_of_its_owner(no_owners):
    alice = no_owners.keys["alice"]
    task_id = tripo(no_owners, lambda c: c.text_to_model("a blue mug"), f"tsk_{alice}")
    with httpx.Client(base_url=f"{no_owners.url}/api/v1", headers={"Authorization": f"Bearer {alice}"}) as native:
        events = follow_events(native, task_id)
        assert [kind for kind, _ in events][0] == "status" and events[-1][1]["status"] == "succeeded"
        listed = [j for j in native.get("/jobs").json()["jobs"] if j["job_id"] == task_id]
        assert listed and listed[0]["feature"] == "mesh_generation"
        assert listed[0]["input"]["text_prompt"] == "a blue mug"  # the request, echoed
    with httpx.Client(base_url=f"{no_owners.url}/api/v1",
                      headers={"Authorization": f"Bearer {no_owners.keys['bob']}"}) as other:
        assert other.get(f"/jobs/{task_id}").status_code == 404


def test_comfy_node_with_its_key_uploads_polls_and_downloads_without_it(no_owners, tmp_path):
    node = ComfyTripoNode(f"{no_owners.url}/compat/comfy/", key=no_owners.keys["alice"])
    path = node.run(IMAGE, tmp_path)
    assert glb_faces(path.read_bytes()) > 0 and path.name.startswith("tripo_model_")
    assert node.requests[:3] == ["POST customers/storage", "PUT upload_url", "POST proxy/tripo/v2/openapi/task"]
    assert node.requests[-1] == "GET pbr_model"
    task = node.polls[-1]["data"]
    assert set(task["output"]) == {"pbr_model", "rendered_image"}
    # its links work without the key until the output expires, and not after
    assert httpx.get(resigned(task["output"]["pbr_model"], time.time() + 60)).status_code == 200
    assert httpx.get(resigned(task["output"]["pbr_model"], time.time() - 1)).status_code == 404
    # another owner cannot see the task; without a key nothing is served
    bob = ComfyTripoNode(f"{no_owners.url}/compat/comfy/", key=no_owners.keys["bob"])
    with pytest.raises(ClientFailed, match="^404"):
        bob._call("GET", f"proxy/tripo/v2/openapi/task/{task['task_id']}")
    with pytest.raises(ClientFailed, match="^401"):
        ComfyTripoNode(f"{no_owners.url}/compat/comfy/").upload(IMAGE)


def test_keyless_flavours_act_as_their_owner(studio, tmp_path):
    base = f"{studio.url}/compat"
    with httpx.Client(base_url=f"{studio.url}/api/v1",
                      headers={"Authorization": f"Bearer {studio.keys['studio']}"}) as mine, \
            httpx.Client(base_url=f"{studio.url}/api/v1",
                         headers={"Authorization": f"Bearer {studio.keys['alice']}"}) as alice:
        uid = httpx.post(f"{base}/hunyuan/send", json={"image": base64.b64encode(IMAGE.read_bytes()).decode()}
                         ).json()["uid"]
        assert mine.get(f"/jobs/{uid}").status_code == 200  # the studio's job
        assert alice.get(f"/jobs/{uid}").status_code == 404
        with open(IMAGE, "rb") as f:
            theirs = alice.post("/files", files={"file": ("a.png", f, "image/png")}).json()["file_id"]
        other = alice.post("/mesh/generate", json={"images": [theirs]}).json()["job_id"]
        r = httpx.get(f"{base}/hunyuan/status/{other}")  # another owner's job: not found
        assert r.status_code == 404 and set(r.json()) == {"detail"}


def test_sam3d_link_is_signed_and_expires(studio):
    probe = Sam3DProbe(f"{studio.url}/compat/sam3d")
    r = probe.inference(IMAGE)
    assert r.status_code == 200, r.text
    link = r.json()["download_url"]
    assert probe.download(link).status_code == 200  # no credentials: the signature
    absolute = f"{studio.url}{link}"
    assert httpx.get(resigned(absolute, time.time() - 1)).status_code == 404
    assert httpx.get(absolute.replace("signature=", "signature=0")).status_code == 403


def test_trellis_without_its_model_is_not_ready_and_not_retried(studio):
    trellis = TrellisClient(f"{studio.url}/compat/trellis")
    status = trellis.health_check()
    assert status["status"] == "error" and status["model_loaded"] is False and "compat_needs_gpu" in status["error"]
    assert trellis.cli_health() == 1
    with pytest.raises(ClientFailed, match="Models not loaded"):
        trellis.generate(TrellisClient.request(IMAGE))
    assert trellis.posts == [503]
