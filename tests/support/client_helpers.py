"""Small helpers the API tests share: upload, submit, follow events, wait."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import trimesh

from pocket3d.geometry.meshes import weld

SHARED = Path(__file__).resolve().parents[3] / "shared" / "testdata"
IMAGES = SHARED / "images"
MESHES = SHARED / "meshes"


def stood_up(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A copy of a Z-up mesh (the shared TRELLIS meshes) turned Y-up, +Z forward, as pocket3d hands it to a model."""
    from pocket3d.geometry.orientation import TO_Y_UP

    turned = mesh.copy()
    matrix = np.eye(4)
    matrix[:3, :3] = TO_Y_UP["z"]
    turned.apply_transform(matrix)
    return turned


class Recorder:
    """A progress callback for running a model directly: keeps what it reported and warned of (models.spec.warn)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str | None]] = []
        self.warnings: list[tuple[str, str]] = []

    @property
    def fractions(self) -> list[float]:
        return [fraction for fraction, _ in self.calls]

    def __call__(self, fraction: float, message: str | None = None) -> None:
        self.calls.append((fraction, message))

    def warn(self, code: str, message: str) -> None:
        self.warnings.append((str(code), message))


def joint_heads(gltf) -> np.ndarray:  # noqa: ANN001 - a pygltflib.GLTF2
    """Where each joint of the file's one skin is, in the mesh's space (its inverse bind matrix undone)."""
    (skin,) = gltf.skins
    accessor = gltf.accessors[skin.inverseBindMatrices]
    view = gltf.bufferViews[accessor.bufferView]
    data = np.frombuffer(gltf.binary_blob(), dtype=np.float32, count=accessor.count * 16,
                         offset=view.byteOffset + (accessor.byteOffset or 0))
    return -data.reshape(-1, 4, 4).transpose(0, 2, 1)[:, :3, 3]


def upload(client: httpx.Client, path: Path, name: str | None = None) -> dict:
    with open(path, "rb") as f:
        r = client.post("/files", files={"file": (name or path.name, f, "application/octet-stream")})
    assert r.status_code == 201, r.text
    return r.json()


def submit(client: httpx.Client, route: str, body: dict, expect: int = 202) -> dict:
    r = client.post(route, json=body)
    assert r.status_code == expect, r.text
    return r.json()


def finish(client: httpx.Client, route: str, body: dict, timeout: float = 300) -> dict:
    """Submit a job and return it once it has ended.

    The route's ``?wait=`` lets the server answer with the finished job; where the job outlives the wait (the
    server caps it at ``server.max_wait``, 60 s) the answer is 202 and this follows the job to its end. How
    fast a job runs on a loaded two-core CI machine is not what the tests that call this are about; the wait
    itself is tested on its own (test_api_flow.py)."""
    r = client.post(route, json=body, timeout=timeout)  # not the client's own, which may be the server's wait
    assert r.status_code in (200, 202), r.text
    job = r.json()
    if job["status"] not in ("succeeded", "failed", "cancelled"):
        job = wait_final(client, job["job_id"], timeout)
    return job


def follow_events(client: httpx.Client, job_id: str, timeout: float = 180) -> list[tuple[str, dict]]:
    """Read the job's SSE stream to its end; returns (event, data) pairs."""
    events: list[tuple[str, dict]] = []
    with client.stream("GET", f"/jobs/{job_id}/events", timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        event, data = "message", []
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                events.append((event, json.loads("\n".join(data))))
                event, data = "message", []
    return events


def wait_final(client: httpx.Client, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


VALIDATOR = Path(__file__).resolve().parents[2] / "tools" / "gltf-validator"


def assert_valid_gltf(data: bytes, tmp_dir: Path) -> dict:
    """Run the Khronos glTF validator (tools/gltf-validator, set up by `make test`) on a GLB; 0 errors or fail."""
    if not (VALIDATOR / "node_modules" / "gltf-validator").is_dir() or shutil.which("node") is None:
        if os.environ.get("CI"):
            raise AssertionError("the glTF validator is not installed: run scripts/ensure-gltf-validator.sh")
        pytest.skip("the glTF validator is not installed (scripts/ensure-gltf-validator.sh)")
    path = tmp_dir / f"check-{hashlib.sha256(data).hexdigest()[:12]}.glb"
    path.write_bytes(data)
    run = subprocess.run(["node", str(VALIDATOR / "validate.mjs"), str(path)], capture_output=True, text=True,
                         timeout=60)
    report = json.loads(run.stdout.splitlines()[0])
    assert report["numErrors"] == 0, report["messages"]
    return report


BPY_PYTHON = Path(__file__).resolve().parents[2] / ".venv-bpy" / "bin" / "python"


def read_fbx(path: Path) -> dict:
    """What Blender finds in an FBX file (armatures with bone names, meshes with polygons and vertex groups)."""
    if not BPY_PYTHON.is_file():
        if os.environ.get("CI"):
            raise AssertionError("the bpy environment is missing: run `make venv-bpy`")
        pytest.skip("the bpy environment is missing (make venv-bpy)")
    run = subprocess.run([str(BPY_PYTHON), str(Path(__file__).with_name("fbx_readback.py")), "--", str(path)],
                         capture_output=True, text=True, timeout=120)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("READBACK ")), None)
    assert line is not None, run.stderr[-2000:]
    return json.loads(line.removeprefix("READBACK "))


def leftover_temp_files(data_dir: Path) -> list[Path]:
    tmp = data_dir / "tmp"
    return sorted(tmp.rglob("*")) if tmp.exists() else []


def is_closed(mesh: trimesh.Trimesh) -> bool:
    """No hole: with vertices merged by position (UV seams split them in a file), every edge has a face on each
    side. Not trimesh's is_watertight, which also wants manifold edges; decimation may collapse two separate
    vertices onto one point, and merging by position then joins surfaces that only touch."""
    edges = np.sort(weld(mesh.vertices, mesh.faces).mesh().edges, axis=1)
    return bool((np.unique(edges, axis=0, return_counts=True)[1] > 1).all())


def textured_goblin_zip(dest: Path, colours: tuple = ((200, 30, 30), (30, 30, 200)), **extra: bytes) -> Path:
    """The goblin OBJ (it has UVs and names material.mtl) zipped with that MTL and a texture in a sub-folder: the
    left half of the image one colour, the right half another. ``extra``: more entries, name to bytes."""
    import zipfile

    from PIL import Image

    image = Image.new("RGB", (64, 64), colours[0])
    image.paste(colours[1], (32, 0, 64, 64))
    png = io.BytesIO()
    image.save(png, "PNG")
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(MESHES / "typical_humanoid_goblin.obj", "goblin/typical_humanoid_goblin.obj")
        z.writestr("goblin/material.mtl", "newmtl material_0\nKd 1 1 1\nmap_Kd textures/skin.png\n")
        z.writestr("goblin/textures/skin.png", png.getvalue())
        for name, data in extra.items():
            z.writestr(name, data)
    return dest
