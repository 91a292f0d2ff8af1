"""The foreign clients of ../shared/COMPAT.md, restated in Python for the compat tests: each makes its client's
requests in its order and timing, and is as strict about the answers as the client is (key sets, types, status
codes). Only the Tripo SDK is the real client (``tripo3d``, from PyPI); Blender, Rust, Vue and ComfyUI cannot run
here, so these classes are what their code does, written from the contract. Every request goes to a real server
on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin

import httpx
import trimesh


class ClientFailed(Exception):
    """What the client shows its user when a request fails (its own words, as the client words them)."""


def glb_faces(data: bytes) -> int:
    """What an importer makes of the bytes: a glTF 2.0 binary with faces, or an error."""
    assert data[:4] == b"glTF", data[:40]
    scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
    return sum(len(g.faces) for g in scene.geometry.values())


# -- Hunyuan3D-2 / 2.1 ------------------------------------------------------------------------------------------

@dataclass
class HunyuanBlender:
    """Tencent's Hunyuan3D-2 Blender add-on (``blender_addon.py``): one synchronous POST /generate without a
    timeout; the selected mesh goes along only when "Generate Texture" is on (else it is a plain generation), with
    the image if one is set, else the prompt; the answer's bytes are written to a .glb and imported, anything but
    200 shows the body's text."""

    api_url: str
    octree_resolution: int = 256
    num_inference_steps: int = 20
    guidance_scale: float = 5.5

    def generate(self, *, image: Path | None = None, text: str | None = None, mesh: bytes | None = None,
                 texture: bool = False) -> bytes:
        body: dict[str, Any] = {"octree_resolution": self.octree_resolution,
                                "num_inference_steps": self.num_inference_steps,
                                "guidance_scale": self.guidance_scale, "texture": texture}
        if mesh is not None and texture:
            body["mesh"] = base64.b64encode(mesh).decode()
        if image is not None:
            body["image"] = base64.b64encode(image.read_bytes()).decode()
        elif text is not None:
            body["text"] = text
        response = httpx.post(f"{self.api_url.rstrip('/')}/generate", json=body, timeout=None)
        if response.status_code != 200:
            raise ClientFailed(f"Generation failed: {response.text}")
        return response.content


@dataclass
class BlenderMCP:
    """blender-mcp's LOCAL_API mode: the same POST /generate, with the prompt and the image when it was given
    both (the original server then goes by the image); DONE with the file it wrote, or an error."""

    api_url: str

    def generate(self, out_dir: Path, *, image: Path | None = None, text: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"octree_resolution": 256, "num_inference_steps": 20, "guidance_scale": 5.5,
                                "texture": False}
        if text:
            body["text"] = text
        if image is not None:
            body["image"] = base64.b64encode(image.read_bytes()).decode()
        response = httpx.post(f"{self.api_url.rstrip('/')}/generate", timeout=None, json=body)
        if response.status_code != 200:
            return {"status": "ERROR", "message": response.text}
        path = out_dir / "hunyuan_local.glb"
        path.write_bytes(response.content)
        return {"status": "DONE", "path": str(path)}


@dataclass
class SyncTwin:
    """SyncTwin's ``Hunyuan3DAPIClient`` (Omniverse, for the 2.1 server): every request with a 30 s timeout;
    answers become dataclasses, so an unknown key is a TypeError (as it kills its task)."""

    base_url: str
    poll_interval: float = 2.0
    timeout: float = 30
    polls: list[dict] = field(default_factory=list)

    @dataclass
    class Health:
        status: str
        worker_id: str

    @dataclass
    class Status:
        status: str
        model_base64: str | None = None
        message: str | None = None

    @dataclass
    class Generation:
        uid: str

    def _get(self, method: str, path: str, **kwargs: Any) -> dict:
        response = httpx.request(method, f"{self.base_url.rstrip('/')}{path}", timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            raise ClientFailed(f"HTTP error {response.status_code}: {response.text}")
        return response.json()

    def health_check(self) -> SyncTwin.Health:
        return self.Health(**self._get("GET", "/health"))

    @staticmethod
    def request(path: Path, **options: Any) -> dict[str, Any]:
        return {"image": base64.b64encode(path.read_bytes()).decode(), "remove_background": True,
                "texture": False, "seed": 1234, "octree_resolution": 256, "num_inference_steps": 5,
                "guidance_scale": 5.0, "num_chunks": 8000, "face_count": 40000, **options}

    def generate_3d_model_async(self, path: Path, **options: Any) -> bytes:
        uid = self.Generation(**self._get("POST", "/send", json=self.request(path, **options))).uid
        while True:
            raw = self._get("GET", f"/status/{uid}")
            self.polls.append(raw)
            status = self.Status(**raw)
            if status.status == "completed":
                if not status.model_base64:
                    raise ClientFailed("No model data received from completed task")
                return base64.b64decode(status.model_base64)
            if status.status == "error":
                raise ClientFailed(f"Task failed: {status.message}")
            time.sleep(self.poll_interval)


# -- TRELLIS.2 ---------------------------------------------------------------------------------------------------

@dataclass
class TrellisClient:
    """crossworld's Rust ``TrellisClient`` (reqwest + serde): health with a 5 s timeout, generate with 600 s and
    its retry table; serde's strictness on the answers (the three booleans required, faces u32, colours [f32; 3],
    glb_data a byte array)."""

    server_url: str
    max_retries: int = 3
    base_delay: float = 1.0
    posts: list[int] = field(default_factory=list)  # the status of each POST /generate

    def health_check(self) -> dict[str, Any]:
        response = httpx.get(f"{self.server_url.rstrip('/')}/health", timeout=5)
        if not response.is_success:
            raise ClientFailed(f"Health check failed with status: {response.status_code}")
        status = response.json()
        for key in ("trellis_available", "gpu_available", "model_loaded"):
            if not isinstance(status.get(key), bool):
                raise ClientFailed(f"Parse error: missing field `{key}`")
        if not isinstance(status.get("status"), str):
            raise ClientFailed("Parse error: missing field `status`")
        for key in ("gpu_name", "error"):
            if status.get(key) is not None and not isinstance(status[key], str):
                raise ClientFailed(f"Parse error: invalid type for `{key}`")
        return status

    def cli_health(self) -> int:
        """The CLI's ``health``: exit 0 when ready (status ready and the model loaded), else 1."""
        try:
            status = self.health_check()
        except ClientFailed:
            return 1
        return 0 if status["status"] == "ready" and status["model_loaded"] else 1

    @staticmethod
    def request(image: Path, seed: int | None = None, resolution: str = "1024", **values: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"image": base64.b64encode(image.read_bytes()).decode(), "resolution": resolution,
                                "ss_guidance_strength": 7.5, "ss_sampling_steps": 12,
                                "shape_slat_guidance_strength": 3.0, "shape_slat_sampling_steps": 12,
                                "tex_slat_guidance_strength": 3.0, "tex_slat_sampling_steps": 12, **values}
        if seed is not None:  # skip_serializing_if = "Option::is_none"
            body["seed"] = seed
        return body

    def generate(self, body: dict[str, Any], attempt: int = 0) -> dict[str, Any]:
        response = httpx.post(f"{self.server_url.rstrip('/')}/generate", json=body, timeout=600)
        self.posts.append(response.status_code)
        if response.status_code >= 500:
            if response.status_code == 503:
                if "still loading" in response.text and attempt < self.max_retries:
                    time.sleep(self.base_delay * 2 ** attempt)
                    return self.generate(body, attempt + 1)
                raise ClientFailed("Models not loaded on server")
            if attempt < self.max_retries:
                time.sleep(self.base_delay * 2 ** attempt)
                return self.generate(body, attempt + 1)
            raise ClientFailed(f"Server error: {response.text}")
        if response.status_code >= 400:
            raise ClientFailed(f"Server error: Client error ({response.status_code}): {response.text}")
        return self.parse_result(response.json())

    @staticmethod
    def parse_result(result: Any) -> dict[str, Any]:
        """serde's ``TrellisResult``: exactly its fields and types."""
        def triples(name: str, kind: type, value: Any) -> None:
            if not isinstance(value, list) or any(not isinstance(t, list) or len(t) != 3 for t in value):
                raise ClientFailed(f"Parse error: `{name}` is not a list of triples")
            for t in value:
                for x in t:
                    if kind is int and (type(x) is not int or x < 0):
                        raise ClientFailed(f"Parse error: invalid type: floating point `{x}`, expected u32")
                    if kind is float and (type(x) not in (int, float) or isinstance(x, bool)):
                        raise ClientFailed(f"Parse error: invalid type for `{name}`")
        triples("vertices", float, result["vertices"])
        triples("faces", int, result["faces"])
        for key in ("vertex_colors", "vertex_normals"):
            if result.get(key) is not None:
                triples(key, float, result[key])
        if "glb_data" in result and result["glb_data"] is not None and not isinstance(result["glb_data"], list):
            raise ClientFailed("Parse error: invalid type: string, expected a sequence")
        return result


# -- SAM 3D ------------------------------------------------------------------------------------------------------

@dataclass
class Sam3DProbe:
    """tryonar-sam3d's ``tests/test_api.py`` as an HTTP probe: the exact health body, inference with three keys, the
    root-relative download_url resolved against the host, and a text upload refused with 400."""

    base_url: str  # the host and the prefix: http://127.0.0.1:8000/compat/sam3d

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.base_url}/health", timeout=30)

    def inference(self, path: Path, content_type: str = "image/png") -> httpx.Response:
        with open(path, "rb") as f:
            return httpx.post(f"{self.base_url}/api/inference", files={"file": (path.name, f, content_type)},
                              timeout=180)

    def download(self, download_url: str) -> httpx.Response:
        return httpx.get(urljoin(self.base_url, download_url), timeout=30)


# -- Tripo's SDK --------------------------------------------------------------------------------------------------

def with_tripo(base_url: str, fn: Callable[[Any], Awaitable[Any]], key: str = "tsk_local") -> Any:
    """``fn(client)`` with the real ``tripo3d.TripoClient`` on ``base_url``/compat/tripo, in an event loop of its
    own thread (a test may hold one in the main thread: Playwright's synchronous API does)."""
    from tripo3d import TripoClient

    async def main() -> Any:
        async with TripoClient(api_key=key, v3_base_url=f"{base_url}/compat/tripo") as client:
            return await fn(client)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


# -- ComfyUI -----------------------------------------------------------------------------------------------------

TRIPO_STATUSES = {"queued", "running", "success", "failed", "cancelled", "unknown", "banned", "expired"}


@dataclass
class ComfyTripoNode:
    """ComfyUI's ``TripoImageToModelNode`` against ``--comfy-api-base``: the image to the API's storage (signed
    PUT, no key, no content type: the node passes none), the task naming its download URL with every widget's
    value (the node's defaults: ``face_limit`` -1 means no limit), a poll every 5 s (at most 120), the first of
    pbr_model, model, base_model downloaded without the key. Its pydantic models are strict: status an enum,
    progress an integer 0-100."""

    api_base: str  # with the trailing slash, as ComfyUI urljoins "proxy/..." onto it
    key: str | None = None
    poll_interval: float = 5.0
    polls: list[dict] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def _headers(self) -> dict[str, str]:
        return {"X-API-KEY": self.key} if self.key else {}

    def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        url = urljoin(self.api_base, path)
        self.requests.append(f"{method} {path}")
        response = httpx.request(method, url, headers=self._headers(), timeout=60, **kwargs)
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("code"), int) and isinstance(body.get("suggestion"), str), body
            raise ClientFailed(f"{response.status_code}: {body['message']}")
        return response.json()

    # The node's widgets at their defaults, as its request model sends them (exclude_none: style "None" is left out).
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "texture": True, "pbr": True, "model_seed": 42, "texture_seed": 42, "texture_quality": "standard",
        "texture_alignment": "original_image", "face_limit": -1, "auto_size": True, "orientation": "default",
        "quad": False}

    def upload(self, image: Path) -> str:
        slot = self._call("POST", "customers/storage", json={"file_name": f"{uuid.uuid4()}.png"})
        self.requests.append("PUT upload_url")
        put = httpx.put(slot["upload_url"], content=image.read_bytes(), timeout=60)
        put.raise_for_status()
        return slot["download_url"]

    def run(self, image: Path, out_dir: Path, **options: Any) -> Path:
        url = self.upload(image)
        created = self._call("POST", "proxy/tripo/v2/openapi/task", json={
            "type": "image_to_model", "file": {"type": "jpeg", "url": url}, **self.DEFAULTS, **options})
        assert created["code"] == 0
        task_id = created["data"]["task_id"]
        for _ in range(120):
            answer = self._call("GET", f"proxy/tripo/v2/openapi/task/{task_id}")
            self.polls.append(answer)
            task = answer["data"]
            assert task["status"] in TRIPO_STATUSES, task
            assert type(task["progress"]) is int and 0 <= task["progress"] <= 100, task
            if task["status"] == "success":
                output = task["output"]
                url = output.get("pbr_model") or output.get("model") or output.get("base_model")
                self.requests.append("GET pbr_model")
                model = httpx.get(url, timeout=60)  # no key
                model.raise_for_status()
                path = out_dir / f"tripo_model_{task_id}.glb"
                path.write_bytes(model.content)
                return path
            if task["status"] in TRIPO_STATUSES - {"queued", "running"}:
                raise ClientFailed(f"Task {task['status']}: {task.get('error_msg', '')}")
            time.sleep(self.poll_interval)
        raise ClientFailed("Tripo task timed out")
