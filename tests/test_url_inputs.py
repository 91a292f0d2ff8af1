"""Image inputs given as URLs (inputs.allow_urls): off by default; on, fetched once at submission through the
address guard (no metadata, private or loopback targets unless allowed, on every redirect too), within the size and
time limits, and only when the answer is an image.

Names resolve only through a stub resolver (an in-process server), and the one image server is a receiver on
loopback that a test name is allowed to reach: no request leaves this machine."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from client_helpers import IMAGES, wait_final
from receiver import Receiver, StubResolverForTests
from server import SUPPORT, InProcessServer

from pocket3d.config import load_settings
from pocket3d.node import Node

PNG = (IMAGES / "typical_misc_crate.png").read_bytes()


def serve(request, n):
    """What the test image server answers, by path."""
    if request.path == "/crate.png":
        return 200, {"content-type": "image/png"}, PNG
    if request.path == "/page.html":
        return 200, {"content-type": "text/html"}, b"<html>not an image</html>"
    if request.path == "/big.png":
        return 200, {"content-type": "image/png"}, PNG * 40
    if request.path == "/to-metadata":
        return 302, {"location": "http://metadata.example.test/latest/meta-data/"}, b""
    return 404, {}, b""


@pytest.fixture(scope="module")
def images():
    with Receiver(respond=serve) as receiver:
        yield receiver


def node_with(tmp_path: Path, images: Receiver, **inputs) -> tuple[Node, StubResolverForTests]:
    resolver = StubResolverForTests({"images.example.test": [["127.0.0.1"]],
                                     "metadata.example.test": [["169.254.169.254"]],
                                     "intranet.example.test": [["10.1.2.3"]]})
    settings = load_settings(SUPPORT / "system.yaml", data_dir=tmp_path / "data", models_file=SUPPORT / "models.yaml",
                             inputs=inputs)
    return Node(settings, resolver=resolver), resolver


def test_urls_are_refused_unless_the_operator_allows_them(tmp_path, images):
    node, resolver = node_with(tmp_path, images)
    with InProcessServer(node, manage_node=True) as c:
        r = c.post("/mesh/generate", json={"images": ["https://images.example.test/crate.png"]})
    assert r.status_code == 422 and r.json()["error_code"] == "INPUT_URL_FORBIDDEN"
    assert "inputs.allow_urls" in r.json()["hint"]
    assert resolver.asked == [] and images.requests == []  # nothing was looked up or fetched


def test_an_allowed_url_is_fetched_through_the_guard(tmp_path, images, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(SUPPORT))  # the device worker imports the test models from there
    base = f"http://images.example.test:{images.port}"
    node, resolver = node_with(tmp_path, images, allow_urls=True, url_schemes=["https", "http"],
                               allow_hosts=["images.example.test"], max_url_size=len(PNG) * 2)
    with InProcessServer(node, manage_node=True) as c:
        before = len(images.requests)
        r = c.post("/mesh/generate", json={"images": [f"{base}/crate.png"]})
        assert r.status_code == 202, r.text
        assert wait_final(c, r.json()["job_id"])["status"] == "succeeded"
        fetched = images.requests[before]
        assert fetched.method == "GET" and fetched.headers["host"] == f"images.example.test:{images.port}"
        assert fetched.headers["accept"].startswith("image/")

        def refused(url: str) -> dict:
            r = c.post("/mesh/generate", json={"images": [url]})
            assert r.status_code == 422, r.text
            return r.json()

        # where pocket3d may not go: by name, after DNS, and after a redirect from an allowed host
        assert "metadata" in refused("http://metadata.example.test/x.png")["message"]
        assert "private" in refused("https://intranet.example.test/x.png")["message"]
        body = refused(f"{base}/to-metadata")
        assert body["error_code"] == "INPUT_URL_FORBIDDEN" and "metadata" in body["message"]
        # answers that are not an image it takes
        for path, why in (("/page.html", "text/html"), ("/missing.png", "404"), ("/big.png", "inputs.max_url_size")):
            body = refused(f"{base}{path}")
            assert body["error_code"] == "INPUT_URL_FAILED" and why in body["message"], body
        # a mesh is never fetched from a URL
        assert refused(f"{base}/crate.png".replace("crate.png", "m.glb")) and c.post(
            "/texture/generate", json={"mesh": f"{base}/m.glb", "text_prompt": "red"}).json()["error_code"] \
            == "INPUT_URL_FORBIDDEN"
    assert "images.example.test" in resolver.asked


def test_https_only_by_default(tmp_path, images):
    node, _ = node_with(tmp_path, images, allow_urls=True, allow_hosts=["images.example.test"])
    with InProcessServer(node, manage_node=True) as c:
        r = c.post("/mesh/generate", json={"images": [f"http://images.example.test:{images.port}/crate.png"]})
    assert r.status_code == 422 and r.json()["error_code"] == "INPUT_URL_FORBIDDEN"
    assert "https://" in r.json()["message"]


def test_compat_url_inputs_go_through_the_same_guard(tmp_path, images):
    """A URL where a Tripo SDK or ComfyUI task wants an image is a native URL input: fetched through the guard
    when the operator allows URLs, refused where the guard refuses. (No scheduler: the fetch happens at
    submission, and the job stays queued.)"""
    from compat_clients import with_tripo
    from tripo3d import TripoAPIError

    node, _ = node_with(tmp_path, images, allow_urls=True, url_schemes=["https", "http"],
                        allow_hosts=["images.example.test"], max_url_size=len(PNG) * 2)
    base = f"http://images.example.test:{images.port}"
    server = InProcessServer(node, manage_node=False)
    try:
        with server as c:
            before = len(images.requests)
            task_id = with_tripo(server.url, lambda client: client.image_to_model(f"{base}/crate.png"))
            assert images.requests[before].path == "/crate.png"
            assert c.get(f"/jobs/{task_id}").json()["status"] == "queued"
            with pytest.raises(TripoAPIError, match="metadata"):
                with_tripo(server.url, lambda client: client.image_to_model("http://metadata.example.test/x.png"))

            comfy = f"{server.url}/compat/comfy/proxy/tripo/v2/openapi/task"
            r = httpx.post(comfy, headers={"X-API-KEY": "any"},
                           json={"type": "image_to_model", "file": {"type": "jpeg", "url": f"{base}/crate.png"}})
            assert r.status_code == 200 and r.json()["code"] == 0, r.text
            assert images.requests[-1].path == "/crate.png"
            r = httpx.post(comfy, headers={"X-API-KEY": "any"}, json={
                "type": "image_to_model", "file": {"type": "jpeg", "url": f"{base}/to-metadata"}})
            assert r.status_code == 422 and r.json()["code"] != 0 and "metadata" in r.json()["message"], r.text
    finally:
        node.stop()
