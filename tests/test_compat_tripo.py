"""Tripo's API v3 at /compat/tripo, driven by the real ``tripo3d`` SDK 1.0.0 from PyPI (its dependency-free
transport, as ``pip install tripo3d`` leaves it) against a server on loopback."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trimesh
from PIL import Image

from client_helpers import IMAGES, SHARED, assert_valid_gltf
from compat_clients import with_tripo

tripo3d = pytest.importorskip("tripo3d")
from tripo3d import TripoAPIError, TripoClient  # noqa: E402
from tripo3d.models import TaskStatus  # noqa: E402

IMAGE = IMAGES / "typical_misc_crate.png"
VIEWS = [SHARED / "multiview" / f"character_{i}.png" for i in (1, 2, 3)]
FAST = 0.3  # wait_for_task's first polling interval in the tests that are not about its timing


def run(compat_server, fn: Callable[[TripoClient], Awaitable[Any]], key: str = "tsk_local") -> Any:
    return with_tripo(compat_server.url, fn, key)


def test_image_to_model_wait_and_download(compat_server, tmp_path):
    async def flow(client: TripoClient) -> Any:
        task_id = await client.image_to_model(str(IMAGE), face_limit=300, model_seed=7)
        queued = await client.get_task(task_id)  # readable at once
        task = await client.wait_for_task(task_id)  # its own timing: 2 s, doubling
        files = await client.download_task_models(task, str(tmp_path))
        return queued, task, files

    queued, task, files = run(compat_server, flow)
    assert queued.status in (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.SUCCESS)
    assert task.status == TaskStatus.SUCCESS and task.progress == 100
    assert task.type == "image_to_model" and isinstance(task.create_time, int) and task.create_time > 0
    raw = task.raw
    assert set(raw) <= {"task_id", "type", "status", "progress", "input", "output", "create_time", "queuing_num",
                        "running_left_time", "error_code", "error_msg"}
    assert set(raw["output"]) == {"model_url", "rendered_image_url"}
    assert raw["output"]["model_url"].startswith(f"{compat_server.url}/compat/tripo/outputs/")
    model = Path(files["model"])
    assert model.name == f"{task.task_id}_model.glb" and files["pbr_model"] == files["model"]
    assert Path(files["rendered_image"]).suffix == ".png"
    assert_valid_gltf(model.read_bytes(), tmp_path)
    # the knobs: a face limit is a target face count
    assert len(trimesh.load(model, force="mesh").faces) <= 600


def test_text_and_multiview_to_model(compat_server, tmp_path):
    async def flow(client: TripoClient) -> Any:
        text = await client.text_to_model("a small wooden table")
        views = await client.multiview_to_model([str(VIEWS[0]), str(VIEWS[1]), str(VIEWS[2]), None])
        done = [await client.wait_for_task(t, polling_interval=FAST) for t in (text, views)]
        return done, [await client.download_task_models(t, str(tmp_path)) for t in done]

    (text, views), files = run(compat_server, flow)
    assert (text.status, text.type) == (TaskStatus.SUCCESS, "text_to_model")
    assert (views.status, views.type) == (TaskStatus.SUCCESS, "multiview_to_model")
    with compat_server.client() as native:  # the views by name, the missing right one left out
        assert set(native.get(f"/jobs/{views.task_id}").json()["input"]["views"]) == {"front", "left", "back"}
    for downloaded in files:
        assert_valid_gltf(Path(downloaded["model"]).read_bytes(), tmp_path)


def test_rig_texture_and_segment_a_finished_task_by_its_id(compat_server, tmp_path):
    async def flow(client: TripoClient) -> Any:
        base = await client.wait_for_task(await client.image_to_model(str(IMAGE)), polling_interval=FAST)
        rigged = await client.rig_model(base.task_id)
        textured = await client.texture_model(base.task_id, text_prompt="rusty orange metal")
        retextured = await client.texture_model(base.task_id)  # no prompt: after the image it was made from
        parts = await client.mesh_segmentation(base.task_id)
        done = [await client.wait_for_task(t, polling_interval=FAST) for t in (rigged, textured, retextured, parts)]
        return base, done, await client.download_task_models(done[0], str(tmp_path))

    base, (rigged, textured, retextured, parts), files = run(compat_server, flow)
    assert [t.status for t in (rigged, textured, retextured, parts)] == [TaskStatus.SUCCESS] * 4, \
        [(t.status, t.error_msg) for t in (rigged, textured, retextured, parts)]
    assert (rigged.type, textured.type, parts.type) == ("animate_rig", "texture_model", "mesh_segmentation")
    with compat_server.client() as native:
        source = native.get(f"/jobs/{base.task_id}").json()["input"]["images"]
        assert native.get(f"/jobs/{retextured.task_id}").json()["input"]["images"] == source
    glb = Path(files["model"]).read_bytes()
    assert_valid_gltf(glb, tmp_path)
    assert json.loads(glb[20:20 + int.from_bytes(glb[12:16], "little")])["skins"]  # a skinned model


def test_a_failed_job_ends_failed_with_its_reason(compat_server, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (48, 48), (200, 200, 30)).save(blank)

    async def flow(client: TripoClient) -> Any:
        return await client.wait_for_task(await client.image_to_model(str(blank)), polling_interval=FAST)

    task = run(compat_server, flow)
    assert task.status == TaskStatus.FAILED
    assert "no object in an image of one colour" in task.error_msg
    assert isinstance(task.error_code, int) and task.error_code != 0


def test_an_unknown_task_raises_the_sdk_error(compat_server):
    async def flow(client: TripoClient) -> Any:
        await client.get_task("job_00000000000000000000000000000")

    with pytest.raises(TripoAPIError) as raised:
        run(compat_server, flow)
    assert raised.value.code != 0 and "not found" in raised.value.message


def test_what_is_not_served_raises_the_sdk_error_saying_so(compat_server):
    async def flow(client: TripoClient) -> Any:
        await client.text_to_image("a chair")

    with pytest.raises(TripoAPIError, match="not served by this server"):
        run(compat_server, flow)


def test_presigned_upload_list_and_balance(compat_server):
    async def flow(client: TripoClient) -> Any:
        client.MULTIPART_MAX_BYTES = 0  # every file goes the way of a file over 50 MB: presign, then a PUT
        token = (await client.upload_file(str(IMAGE)))["file_token"]
        task_id = await client.image_to_model(token)
        await client.wait_for_task(task_id, polling_interval=FAST)
        listed = await client.list_tasks([task_id, "job_00000000000000000000000000000"])
        return token, listed, await client.get_balance()

    token, listed, balance = run(compat_server, flow)
    assert token.startswith("file_") and "/" not in token
    assert list(listed.tasks) and listed.tasks[next(iter(listed.tasks))].status == TaskStatus.SUCCESS
    assert listed.missed == ["job_00000000000000000000000000000"]
    assert balance.balance > 0 and balance.frozen == 0


def test_a_url_input_is_refused_where_urls_are_off(compat_server):
    async def flow(client: TripoClient) -> Any:
        return await client.image_to_model("https://example.com/chair.png")

    with pytest.raises(TripoAPIError) as raised:
        run(compat_server, flow)
    assert "URL" in raised.value.message
    assert "/v3/files" in raised.value.suggestion and "inputs.allow_urls" in raised.value.suggestion  # the SDK's way


def test_a_client_at_the_bare_origin_is_told_the_mount(compat_server):
    import httpx

    r = httpx.get(f"{compat_server.url}/v3/tasks/job_x")
    assert r.status_code == 404 and "/compat/tripo" in r.json()["hint"]
