"""The SAM 3D all-in-one service at /compat/sam3d, as tryonar-sam3d's API test probes it (restated as HTTP in
tests/support/compat_clients.py): health, inference, the root-relative download link, a text upload refused."""

from __future__ import annotations

import re

import pytest

from client_helpers import IMAGES, assert_valid_gltf
from compat_clients import Sam3DProbe

IMAGE = IMAGES / "typical_creature_elephant.png"


@pytest.fixture
def probe(compat_server) -> Sam3DProbe:
    return Sam3DProbe(f"{compat_server.url}/compat/sam3d")


def test_health_body_is_exact(probe):
    r = probe.health()
    assert r.status_code == 200 and r.json() == {"status": "ready", "model": "loaded"}


def test_inference_link_resolves_against_the_host(probe, compat_server, tmp_path):
    r = probe.inference(IMAGE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"status", "download_url", "inference_time"}
    assert body["status"] == "success" and isinstance(body["inference_time"], float)
    # root-relative, with the mount prefix, named after the upload and the job
    assert re.fullmatch(r"/compat/sam3d/outputs/\d+_typical_creature_elephant-job_\w+\.glb\?expires=\d+&signature="
                        r"[0-9a-f]{64}", body["download_url"]), body["download_url"]
    glb = probe.download(body["download_url"])
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    assert glb.content[:4] == b"glTF"
    assert_valid_gltf(glb.content, tmp_path)
    # without its signature the link is refused
    assert probe.download(body["download_url"].split("?")[0]).status_code == 403
    # the upload was kept only for its job
    with compat_server.client() as native:
        assert native.get("/files").json()["files"] == [] or all(
            f["filename"] != IMAGE.name for f in native.get("/files").json()["files"])


def test_a_text_upload_is_400_and_a_form_without_file_422(probe, compat_server):
    r = probe.inference(IMAGE, content_type="text/plain")
    assert r.status_code == 400 and r.json() == {"detail": "File must be an image"}
    import httpx

    r = httpx.post(f"{compat_server.url}/compat/sam3d/api/inference", data={"other": "x"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"]


def test_a_failed_job_is_500(probe, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (40, 40), (10, 200, 10)).save(blank)
    r = probe.inference(blank)
    assert r.status_code == 500 and "no object" in r.json()["detail"]
