"""pocket3d.client, the Python SDK, against a real server on loopback, directly and through a proxy that loses
responses and cuts connections the way a bad network does."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import sys
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_helpers import IMAGES, MESHES, assert_valid_gltf
from fault_proxy import FaultProxy
from PIL import Image
from server import ROOT, ServerProcess, free_port

from pocket3d.api import schemas
from pocket3d.client import (
    AsyncClient,
    Client,
    IdempotencyKeyReused,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    NotFound,
    ServerUnreachable,
    ServiceUnavailable,
    ValidationFailed,
    WaitTimeout,
)
from pocket3d.client import _core, errors
from pocket3d.errors import HTTP_STATUS

SLOW = {"delay": 1.0, "steps": 5}  # the test heightfield model: five progress reports over a second


@pytest.fixture
def p3d(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, max_retries=2) as c:
        yield c


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[FaultProxy]:
    p = FaultProxy(server.port).start()
    yield p
    p.stop()


def test_upload_generate_wait_download(p3d: Client, tmp_path: Path) -> None:
    image = p3d.upload(IMAGES / "typical_misc_crate.png")
    assert image.kind == "image" and image.filename == "typical_misc_crate.png"
    job = p3d.generate_mesh(images=[image], model_preference="test_heightfield", parameters=SLOW)
    assert job.status in ("queued", "running") and job.view.feature == "mesh_generation"

    percents: set[float] = set()
    done = job.wait(timeout=60, on_progress=lambda view: percents.add(view.progress))
    assert done.status == "succeeded" and job.view == done
    assert len(percents) >= 3 and max(percents) == 100.0, percents

    saved = job.download(tmp_path / "crate.glb")
    assert saved == {"model.glb": tmp_path / "crate.glb"}
    with pytest.raises(ValidationFailed) as a_path:  # a path where a file id goes: refused before it is sent
        p3d.generate_mesh(images=[str(IMAGES / "typical_misc_crate.png")])
    assert a_path.value.code == "INVALID_REQUEST" and "client.upload(path)" in (a_path.value.hint or "")
    data = (tmp_path / "crate.glb").read_bytes()
    assert hashlib.sha256(data).hexdigest() == done.outputs[0].sha256
    assert_valid_gltf(data, tmp_path)
    everything = job.download(tmp_path / "all")
    assert everything == {"model.glb": tmp_path / "all" / "typical_misc_crate.glb",
                          "preview.png": tmp_path / "all" / "typical_misc_crate-preview.png"}, \
        "a directory takes every output under the name the server gives it"
    assert everything["model.glb"].read_bytes() == data
    assert not list(tmp_path.rglob("*.part")), "no partial file left"


def test_the_async_client_does_the_same(server: ServerProcess, tmp_path: Path) -> None:
    async def run() -> tuple[set[float], dict[str, Path]]:
        percents: set[float] = set()
        async with AsyncClient(server.url) as p3d:
            with open(IMAGES / "typical_misc_crate.png", "rb") as f:
                image = await p3d.upload(f)
            job = await p3d.generate_mesh(images=[image.file_id], model_preference="test_heightfield",
                                          parameters=SLOW)

            async def heard(view: schemas.JobView) -> None:  # an async callback is awaited
                await asyncio.sleep(0)
                percents.add(view.progress)

            await job.wait(timeout=60, on_progress=heard)
            return percents, await job.download(tmp_path)

    percents, saved = asyncio.run(run())
    assert len(percents) >= 3 and max(percents) == 100.0, percents
    assert_valid_gltf(saved["model.glb"].read_bytes(), tmp_path)


def test_a_server_under_a_path_prefix(server: ServerProcess, tmp_path: Path) -> None:
    """Behind a reverse proxy that mounts the server at /pocket3d, the links the server returns (download URLs)
    are followed under the prefix too."""
    mounted = FaultProxy(server.port, prefix="/pocket3d").start()
    try:
        with Client(f"{mounted.url}/pocket3d") as p3d:
            job = p3d.generate_mesh(images=[p3d.upload(IMAGES / "T.png")], model_preference="test_heightfield")
            job.wait(timeout=60)
            saved = job.download(tmp_path / "t.glb")
    finally:
        mounted.stop()
    assert hashlib.sha256(saved["model.glb"].read_bytes()).hexdigest() == job.view.outputs[0].sha256
    assert all(s.target.startswith("/pocket3d/api/v1/") for s in mounted.seen)


def test_uploads_take_paths_bytes_files_and_images(p3d: Client) -> None:
    png = (IMAGES / "T.png").read_bytes()
    by_bytes = p3d.upload(png, filename="t.png")
    with Image.open(io.BytesIO(png)) as im:
        by_image = p3d.upload(im)
    assert by_bytes.sha256 == hashlib.sha256(png).hexdigest() and by_bytes.filename == "t.png"
    assert by_image.media_type == "image/png" and by_image.filename == "image.png"
    mesh = p3d.upload(MESHES / "typical_humanoid_goblin.obj")
    assert mesh.kind == "mesh" and mesh.format == "obj"
    assert p3d.files.get(mesh.file_id) == mesh
    assert {by_bytes.file_id, by_image.file_id, mesh.file_id} <= {f.file_id for f in p3d.files.list(limit=100).items}
    p3d.files.delete(mesh.file_id)
    with pytest.raises(NotFound):
        p3d.files.get(mesh.file_id)


def test_formats_chaining_and_conversion(p3d: Client, tmp_path: Path) -> None:
    made = p3d.generate_mesh(images=[p3d.upload(IMAGES / "T.png")], model_preference="test_heightfield",
                             output_formats=["glb", "ply"])
    made.wait(timeout=60)
    saved = made.download(tmp_path)
    assert saved["model.glb"] == tmp_path / "T.glb" and saved["model.ply"] == tmp_path / "T.ply"
    assert made.download(tmp_path / "picked.ply") == {"model.ply": tmp_path / "picked.ply"}, "the suffix picks"

    textured = p3d.generate_texture(mesh=made, text_prompt="red", model_preference="test_subdivide_texture")
    textured.wait(timeout=60)  # a job as an input stands for its model file
    assert textured.download(tmp_path)["model.glb"] == tmp_path / "T-textured.glb"

    as_obj = textured.convert(["obj"])
    assert as_obj.id != textured.id and as_obj.wait(timeout=60).outputs[0].name == "model.obj.zip"
    assert as_obj.download(tmp_path / "t.obj.zip")["model.obj.zip"].stat().st_size == as_obj.view.outputs[0].size
    with pytest.raises(ValidationFailed):
        textured.convert(["gltf"])  # type: ignore[list-item]  # refused before it is sent
    with pytest.raises(ValidationFailed) as as_stl:  # refused before it is sent, as the server refuses it
        p3d.rig(mesh=made, output_format="stl")
    assert as_stl.value.code == "UNSUPPORTED_OUTPUT_FORMAT" and as_stl.value.hint == "ask for one of glb, fbx"
    assert as_stl.value.details == {"output_format": "stl", "supported_outputs": ["glb", "fbx"]}


def test_webhook_calls(p3d: Client) -> None:
    """The SDK's webhook calls, with addresses the server refuses (no traffic leaves loopback; deliveries
    themselves are tested in test_webhooks.py)."""
    assert p3d.webhooks.secret().startswith("whsec_")
    with pytest.raises(ValidationFailed) as refused:
        p3d.webhooks.create("http://10.0.0.7/hook", ["job.succeeded"])
    assert refused.value.code == "WEBHOOK_URL_FORBIDDEN"
    with pytest.raises(ValidationFailed) as bad_event:
        p3d.webhooks.create("http://10.0.0.7/hook", ["job.exploded"])  # type: ignore[list-item]
    assert bad_event.value.code == "INVALID_REQUEST", "checked by the server's model before anything is sent"
    with pytest.raises(NotFound):
        p3d.webhooks.get("whe_missing")
    with pytest.raises(ValidationFailed) as on_request:
        p3d.generate_mesh(text_prompt="a chair", model_preference="test_failing",
                          webhook_url="http://169.254.169.254/latest")
    assert on_request.value.code == "WEBHOOK_URL_FORBIDDEN"
    job = p3d.generate_mesh(text_prompt="a chair", model_preference="test_failing")
    assert p3d.webhooks.deliveries(job.id) == []


def test_wait_survives_cut_event_streams(server: ServerProcess, proxy: FaultProxy, tmp_path: Path) -> None:
    """The proxy resets the first two event streams after two events each: wait reads the job, comes back with
    Last-Event-ID, and still returns the finished job."""
    proxy.add("GET", r"/events$", "cut_events", amount=2, times=2)
    with Client(proxy.url) as p3d:
        image = p3d.upload(IMAGES / "T.png")
        job = p3d.generate_mesh(images=[image], model_preference="test_heightfield",
                                parameters={"delay": 1.5, "steps": 6})
        kinds: list[str] = []
        for event in job.events(timeout=60):
            kinds.append(event.kind)
        assert job.status == "succeeded"
        assert job.download(tmp_path / "m.glb")
    streams = proxy.requests("GET", f"/api/v1/jobs/{job.id}/events")
    assert [s.action for s in streams[:2]] == ["cut_events", "cut_events"]
    assert "last-event-id" not in streams[0].headers
    assert int(streams[1].headers["last-event-id"]) >= 2, "the stream resumes after the last event seen"
    assert kinds[-1] in ("status", "poll")


def test_a_lost_submit_response_retried_with_its_key_makes_one_job(p3d: Client, proxy: FaultProxy) -> None:
    image = p3d.upload(IMAGES / "T.png")
    before = {j.id for j in p3d.jobs.list(limit=100).items}
    proxy.add("POST", "^/api/v1/mesh/generate$", "drop")
    with Client(proxy.url) as through_proxy:
        job = through_proxy.generate_mesh(images=[image], model_preference="test_heightfield")
    posts = proxy.requests("POST", "/api/v1/mesh/generate")
    assert [p.action for p in posts] == ["drop", None], "the first answer was lost, the retry got through"
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert {j.id for j in p3d.jobs.list(limit=100).items} - before == {job.id}, "one job, not two"

    key = posts[0].headers["idempotency-key"]
    again = p3d.generate_mesh(images=[image], model_preference="test_heightfield", idempotency_key=key)
    assert again.id == job.id
    with pytest.raises(IdempotencyKeyReused) as refused:
        p3d.generate_mesh(images=[image], model_preference="test_heightfield", seed=1, idempotency_key=key)
    assert refused.value.status == 409 and refused.value.details["job_id"] == job.id and refused.value.hint
    assert {j.id for j in p3d.jobs.list(limit=100).items} - before == {job.id}


def test_a_download_cut_midway_resumes_with_range(p3d: Client, proxy: FaultProxy, tmp_path: Path) -> None:
    image = p3d.upload(IMAGES / "typical_vehicle_biplane.png")
    done = p3d.generate_mesh(images=[image], model_preference="test_heightfield",
                             parameters={"grid": 96}).wait(timeout=60)
    model = done.outputs[0]
    proxy.add("GET", f"{model.url}$", "cut_bytes", amount=model.size // 2)
    with Client(proxy.url) as through_proxy:
        saved = through_proxy.jobs.get(done.job_id).download(tmp_path / "plane.glb")
    data = saved["model.glb"].read_bytes()
    assert hashlib.sha256(data).hexdigest() == model.sha256
    first, second = proxy.requests("GET", model.url)
    assert "range" not in first.headers
    start = int(second.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start < model.size and second.headers["if-range"] == f'"{model.sha256}"'


def test_reads_retry_after_a_busy_answer_as_long_as_it_asks(p3d: Client, proxy: FaultProxy) -> None:
    job = p3d.generate_mesh(images=[p3d.upload(IMAGES / "T.png")], model_preference="test_heightfield")
    body = b'{"error_code": "NOT_READY", "message": "starting", "details": {}}'
    busy = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    proxy.add("GET", f"/api/v1/jobs/{job.id}$", "respond", times=2, response=busy)
    with Client(proxy.url, max_retries=3) as through_proxy:
        start = time.monotonic()
        assert through_proxy.jobs.get(job.id).id == job.id
        assert time.monotonic() - start >= 1.8, "Retry-After: 1, twice"
    proxy.add("GET", f"/api/v1/jobs/{job.id}$", "respond", times=5, response=busy)
    with Client(proxy.url, max_retries=1) as through_proxy, pytest.raises(ServiceUnavailable) as e:
        through_proxy.jobs.get(job.id)
    assert e.value.code == "NOT_READY" and e.value.retry_after == 1.0


def test_errors_are_typed(p3d: Client, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as missing:
        p3d.jobs.get("job_nope")
    assert missing.value.code == "JOB_NOT_FOUND" and missing.value.request_id
    with pytest.raises(ValidationFailed, match="text_prompt or images"):
        p3d.generate_mesh()  # refused by the server's own request model before anything is sent
    with pytest.raises(ValidationFailed) as unknown:
        p3d.generate_mesh(text_prompt="a chair", model_preference="no_such_model")
    assert unknown.value.code == "UNKNOWN_MODEL" and unknown.value.status == 422

    failing = p3d.generate_mesh(text_prompt="a chair", model_preference="test_failing")
    with pytest.raises(JobFailed) as failed:
        failing.wait(timeout=60)
    assert failed.value.code == "MODEL_ERROR" and "on purpose" in failed.value.message
    with pytest.raises(JobFailed):
        failing.download(tmp_path)

    slow = p3d.generate_mesh(images=[p3d.upload(IMAGES / "T.png")], model_preference="test_heightfield",
                             parameters={"delay": 30, "steps": 30})
    with pytest.raises(JobNotFinished):
        slow.download(tmp_path)
    with pytest.raises(WaitTimeout) as waited:
        slow.wait(timeout=0.5)
    assert waited.value.job.status in ("queued", "running")
    slow.cancel()
    with pytest.raises(JobCancelled):
        slow.wait(timeout=60)

    with Client(f"http://127.0.0.1:{free_port()}", max_retries=1) as nobody, pytest.raises(ServerUnreachable) as e:
        nobody.health()
    assert "pocket3d serve" in str(e.value)


def test_a_download_name_from_the_server_stays_in_its_directory() -> None:
    import httpx

    def named(value: str) -> str | None:
        return _core.attachment_name(httpx.Response(200, headers={"content-disposition": value}))

    assert named('attachment; filename="chair-rigged.fbx"') == "chair-rigged.fbx"
    assert named("attachment; filename*=utf-8''ch%C3%A4ir.glb") == "ch\u00e4ir.glb"
    assert named('attachment; filename="../../etc/passwd"') == "passwd"
    assert named('attachment; filename="..\\..\\boot.ini"') == "boot.ini"
    assert named('attachment; filename=".bashrc"') is None and named("inline") is None


def test_an_answer_of_another_release_is_named_as_such() -> None:
    import httpx

    older = httpx.Response(200, json={"job_id": "job_1", "status": "queued"},
                           request=httpx.Request("GET", "http://127.0.0.1:1/api/v1/jobs/job_1"))
    with pytest.raises(errors.ServerMismatch, match=r"GET /api/v1/jobs/job_1: .* JobView .*another release"):
        _core.parse(schemas.JobView, older)


def test_every_error_code_has_its_class() -> None:
    for code, status in HTTP_STATUS.items():
        cls = errors.error_class(status, code.value)
        assert issubclass(cls, errors.STATUS_CLASSES.get(status, errors.APIError)), (code, cls)
    assert errors.error_class(409, "IDEMPOTENCY_KEY_REUSED") is IdempotencyKeyReused
    assert errors.error_class(503, "QUEUE_FULL") is errors.QueueFull
    assert errors.error_class(429, "CONCURRENCY_LIMITED") is errors.RateLimited


@pytest.mark.parametrize(("method", "fields", "request_model"), [
    ("generate_mesh", _core.MeshFields, schemas.MeshGenerationRequest),
    ("generate_texture", _core.TextureFields, schemas.TextureGenerationRequest),
    ("segment", _core.MeshInputFields, schemas.SegmentationRequest),
    ("rig", _core.MeshInputFields, schemas.RiggingRequest),
])
def test_each_call_takes_every_field_of_its_request(method: str, fields: type, request_model: type) -> None:
    """When the server's request model gains a field, the SDK's call must take it too."""
    assert set(typing.get_type_hints(fields)) - {"idempotency_key"} == set(request_model.model_fields)
    assert getattr(Client, method) and getattr(AsyncClient, method)


@pytest.mark.parametrize(("sync", "asynchronous"), [
    ("Client", "AsyncClient"), ("Jobs", "AsyncJobs"), ("Job", "AsyncJob"), ("Files", "AsyncFiles"),
    ("Webhooks", "AsyncWebhooks")])
def test_the_async_client_has_every_call_of_the_blocking_one(sync: str, asynchronous: str) -> None:
    import inspect

    import pocket3d.client as sdk

    def calls(cls: type) -> dict[str, list[str]]:
        return {name: list(inspect.signature(member).parameters) for name, member in vars(cls).items()
                if not name.startswith("_") and callable(member)}

    blocking, awaited = calls(getattr(sdk, sync)), calls(getattr(sdk, asynchronous))
    if "close" in blocking:
        blocking["aclose"] = blocking.pop("close")
    assert blocking == awaited, "the same calls, with the same parameters"


def test_who_am_i(server: ServerProcess) -> None:
    with Client(server.url) as p3d:
        caller = p3d.me()
    assert caller.auth_enabled is False and caller.key_id is None
    assert caller.limits.max_file_size > 0 and caller.limits.max_jobs_per_owner > 0

    async def ask() -> schemas.Caller:
        async with AsyncClient(server.url) as p3d:
            return await p3d.me()

    assert asyncio.run(ask()) == caller


def test_the_sdk_imports_without_the_server() -> None:
    code = ("import sys, pocket3d.client; "
            "print(sorted(m for m in ('fastapi', 'starlette', 'numpy', 'trimesh', 'sqlalchemy', 'PIL', 'uvicorn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


USER_SCRIPT = """
from typing import assert_type
from pocket3d.client import (AsyncClient, Client, FileInfo, JobFailed, JobStatus, JobView, OutputInfo, Page,
                             RateLimited, Job)

def use(p3d: Client) -> None:
    image = p3d.upload("chair.png")
    assert_type(image, FileInfo)
    job = p3d.generate_mesh(images=[image], output_formats=["glb", "fbx"], texture=False, view_renders=True)
    assert_type(job.status, JobStatus)
    done = job.wait(60, on_progress=lambda view: print(view.progress, view.message))
    assert_type(done.outputs[0], OutputInfo)
    rigged = p3d.rig(mesh=job, output_format="fbx", webhook_url="https://example.com/h")
    assert_type(p3d.jobs.list(status="succeeded", feature="auto_rigging"), Page[Job])
    assert_type(rigged.download("out/"), dict[str, "Path"])
    try:
        rigged.convert(["usdz"]).wait()
    except JobFailed as e:
        assert_type(e.job, JobView)
    except RateLimited as e:
        assert_type(e.retry_after, float | None)

async def use_async(p3d: AsyncClient) -> None:
    job = await p3d.generate_mesh(text_prompt="a chair")
    assert_type(job.status, JobStatus)

    async def heard(view: JobView) -> None: ...

    assert_type(await job.wait(on_progress=heard), JobView)
"""
USER_MISTAKES = """
from pocket3d.client import Client

def use(p3d: Client) -> None:
    p3d.jobs.list(status="suceeded")
    p3d.generate_mesh(imagez=["file_1"])
    p3d.generate_mesh(text_prompt="a chair", quality="ultra")
"""


def test_the_sdk_passes_mypy_strict_and_types_a_users_script(tmp_path: Path) -> None:
    """The package, and a user's script with it: real types for jobs, outputs and errors; mistakes caught."""
    (tmp_path / "user_script.py").write_text("from pathlib import Path\n" + USER_SCRIPT)
    (tmp_path / "user_mistakes.py").write_text(USER_MISTAKES)
    run = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "src/pocket3d/client",
                          str(tmp_path / "user_script.py"), str(tmp_path / "user_mistakes.py")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert [e.split(":")[0].rsplit("/", 1)[-1] for e in errors] == ["user_mistakes.py"] * 3, run.stdout + run.stderr
    assert [int(e.split(":")[1]) for e in errors] == [5, 6, 7], run.stdout
