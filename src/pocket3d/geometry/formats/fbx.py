"""FBX, written by Blender: the only writer found whose FBX (armature, skin weights, embedded textures) reads back
in Blender and assimp. ``bpy`` needs numpy < 2, so it lives in a virtual environment of its own (``make`` creates
``.venv-bpy`` beside ``.venv``; ``POCKET3D_BPY_PYTHON`` points elsewhere) and runs as a subprocess with a
timeout (``POCKET3D_BPY_TIMEOUT`` seconds, default 300). Without it, FBX is refused up front."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import trimesh

from pocket3d.errors import ErrorCode
from pocket3d.geometry.errors import MeshError

SCRIPT = Path(__file__).with_name("_blender_fbx_script.py")


def bpy_python() -> Path:
    configured = os.environ.get("POCKET3D_BPY_PYTHON")
    if configured:
        return Path(configured)
    return Path(sys.prefix).parent / ".venv-bpy" / "bin" / "python"


def unavailable_reason() -> str | None:
    python = bpy_python()
    if not python.is_file():
        return f"FBX export needs Blender's bpy environment; no Python at {python} (run `make venv-bpy`)"
    return None


def convert_glb(src: Path, dest: Path) -> None:
    """Convert a GLB file as it is, so skins, armatures and textures carry over."""
    _blender_convert(src, dest)


def load(path: Path) -> trimesh.Scene:
    """Read an FBX through Blender (to GLB, then trimesh); without the bpy environment FBX cannot be read."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.fbx"  # Blender picks the importer by suffix; uploads are stored without one
        os.symlink(path.resolve(), src)
        glb = Path(tmp) / "scene.glb"
        _blender_convert(src, glb, what="FBX import")
        return trimesh.load(str(glb), file_type="glb", force="scene", process=False)


def _blender_convert(src: Path, dest: Path, what: str = "FBX conversion") -> None:
    code = ErrorCode.INVALID_MESH if what == "FBX import" else ErrorCode.EXPORT_FAILED
    reason = unavailable_reason()
    if reason:
        raise MeshError(reason, ErrorCode.FORMAT_UNAVAILABLE)
    timeout = float(os.environ.get("POCKET3D_BPY_TIMEOUT", "300"))
    try:
        # -I: isolated, so the script's folder (which holds a json.py) does not shadow the standard library
        run = subprocess.run([str(bpy_python()), "-I", str(SCRIPT), "--", str(src), str(dest)], capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MeshError(f"{what} took longer than {timeout:g} s", code) from None
    if run.returncode != 0 or not dest.is_file() or dest.stat().st_size == 0:
        lines = [ln.strip() for ln in (run.stderr or run.stdout).splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")
        reason = re.sub(r"(/[^\s'\"]+)+", "<file>", reason)[:300]  # no server paths in what a client sees
        raise MeshError(f"{what} failed: {reason or f'exit code {run.returncode}'}", code)


def export(scene: trimesh.Scene, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        glb = Path(tmp) / "scene.glb"
        glb.write_bytes(scene.export(file_type="glb"))
        convert_glb(glb, dest)
