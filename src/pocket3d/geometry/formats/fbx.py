"""FBX, written by Blender: the only writer found whose FBX (armature, skin weights, embedded textures) reads back
in Blender and assimp. ``bpy`` needs numpy < 2, so it lives in a virtual environment of its own (``make`` creates
``.venv-bpy`` beside ``.venv``; ``POCKET3D_BPY_PYTHON`` points elsewhere) and runs as a subprocess.

Blender is a big program reading an untrusted file, so every run is fenced in (environment variables, read when
a run starts):

- a file is read by Blender only after :mod:`fbx_check` found its records well formed (a 20 KB file of garbage
  after an FBX header grew Blender to gigabytes in seconds);
- every Blender process runs under an address-space limit (``POCKET3D_BPY_MEMORY_MB``, default 6144), set by the
  child itself before it imports ``bpy``;
- reading an FBX (the check of an upload) may take ``POCKET3D_BPY_IMPORT_TIMEOUT`` seconds (default 30), writing
  one ``POCKET3D_BPY_TIMEOUT`` (default 300);
- at most ``POCKET3D_BPY_PROCESSES`` Blender processes run at once in this process (default 2). A caller that set
  :func:`waiting_at_most` (an upload: ``POCKET3D_BPY_WAIT`` seconds, default 10) waits that long for a free one,
  then gets ``SERVER_BUSY``; a stage waits.

Work files go beside the input, which pocket3d keeps under the data directory's ``tmp/``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import trimesh

from pocket3d.errors import ErrorCode
from pocket3d.geometry.errors import MeshError
from pocket3d.geometry.formats import fbx_check

SCRIPT = Path(__file__).with_name("_blender_fbx_script.py")
DEFAULT_MEMORY_MB = 6144  # a 1.3M-face FBX took 2.6 GB of address space to read
DEFAULT_IMPORT_TIMEOUT = 30.0
DEFAULT_EXPORT_TIMEOUT = 300.0
DEFAULT_PROCESSES = 2
DEFAULT_REQUEST_WAIT = 10.0

_wait: contextvars.ContextVar[float | None] = contextvars.ContextVar("blender_wait", default=None)
_slots: threading.BoundedSemaphore | None = None
_slots_lock = threading.Lock()


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


@contextlib.contextmanager
def waiting_at_most(seconds: float) -> Iterator[None]:
    """Blender runs started inside the block wait at most ``seconds`` for a free process, then raise
    ``SERVER_BUSY`` (for requests, which should not hold a connection for long)."""
    token = _wait.set(seconds)
    try:
        yield
    finally:
        _wait.reset(token)


def for_requests() -> contextlib.AbstractContextManager[None]:
    """The wait of a request for a free Blender process: ``POCKET3D_BPY_WAIT`` seconds (default 10)."""
    return waiting_at_most(_env_number("POCKET3D_BPY_WAIT", DEFAULT_REQUEST_WAIT))


def convert_glb(src: Path, dest: Path) -> None:
    """Convert a GLB file as it is, so skins, armatures and textures carry over."""
    _blender_convert(src, dest)


def load(path: Path) -> trimesh.Scene:
    """Read an FBX through Blender (to GLB, then trimesh), once its records were found well formed."""
    fbx_check.check(path)
    with tempfile.TemporaryDirectory(dir=_work_root(path), prefix="fbx-") as tmp:
        src = Path(tmp) / "in.fbx"  # Blender picks the importer by suffix; uploads are stored without one
        os.symlink(path.resolve(), src)
        glb = Path(tmp) / "scene.glb"
        _blender_convert(src, glb, importing=True)
        with open(glb, "rb") as f:
            return trimesh.load(f, file_type="glb", force="scene", process=False)


def export(scene: trimesh.Scene, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        glb = Path(tmp) / "scene.glb"
        glb.write_bytes(scene.export(file_type="glb"))
        convert_glb(glb, dest)


def _work_root(path: Path) -> Path | None:
    """Beside the input (pocket3d's inputs live under data_dir/tmp); the system's temp dir for a read-only one."""
    parent = path.resolve().parent
    return parent if os.access(parent, os.W_OK) else None


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _pool() -> threading.BoundedSemaphore:
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(max(1, int(_env_number("POCKET3D_BPY_PROCESSES", DEFAULT_PROCESSES))))
        return _slots


def _blender_convert(src: Path, dest: Path, *, importing: bool = False) -> None:
    what = "FBX import" if importing else "FBX conversion"
    code = ErrorCode.INVALID_MESH if importing else ErrorCode.EXPORT_FAILED
    reason = unavailable_reason()
    if reason:
        raise MeshError(reason, ErrorCode.FORMAT_UNAVAILABLE)
    wait = _wait.get()
    slots = _pool()
    if not slots.acquire(timeout=wait):
        raise MeshError(f"every Blender process is busy (POCKET3D_BPY_PROCESSES); try again in a few seconds",
                        ErrorCode.SERVER_BUSY, {"retry_after": max(1, round(wait or 1))})
    try:
        _run_blender(src, dest, what, code, importing)
    finally:
        slots.release()


def _run_blender(src: Path, dest: Path, what: str, code: ErrorCode, importing: bool) -> None:
    timeout = _env_number("POCKET3D_BPY_IMPORT_TIMEOUT" if importing else "POCKET3D_BPY_TIMEOUT",
                          DEFAULT_IMPORT_TIMEOUT if importing else DEFAULT_EXPORT_TIMEOUT)
    memory_mb = int(_env_number("POCKET3D_BPY_MEMORY_MB", DEFAULT_MEMORY_MB))
    try:
        # -I: isolated, so the script's folder (which holds a json.py) does not shadow the standard library
        run = subprocess.run([str(bpy_python()), "-I", str(SCRIPT), "--", str(src), str(dest), str(memory_mb)],
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MeshError(f"{what} took longer than {timeout:g} s", code) from None
    if run.returncode != 0 or not dest.is_file() or dest.stat().st_size == 0:
        out = run.stderr or run.stdout
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        if "MemoryError" in out or "std::bad_alloc" in out:
            reason = f"it needs more than the {memory_mb} MB Blender may use (POCKET3D_BPY_MEMORY_MB)"
        elif run.returncode < 0:
            reason = f"Blender died ({_signal_name(-run.returncode)})"
        else:
            reason = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")
        reason = re.sub(r"(/[^\s'\"]+)+", "<file>", reason)[:300]  # no server paths in what a client sees
        raise MeshError(f"{what} failed: {reason or f'exit code {run.returncode}'}", code)


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
