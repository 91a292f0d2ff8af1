"""Artifacts by content hash: inputs and outputs live once, under their SHA-256.

The local store keeps ``<root>/artifacts/ab/cd/abcd…`` and a ``tmp`` folder on the same filesystem, so a
finished file enters the store by an atomic rename: a crash leaves either the whole file or none of it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class LocalArtifactStore:
    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "artifacts"
        self.tmp = root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, src: Path, sha256: str | None = None) -> tuple[str, int]:
        """Move ``src`` (a file under ``tmp``) into the store; returns (sha256, size). ``src`` is gone after."""
        digest = sha256 or sha256_file(src)
        size = src.stat().st_size
        dest = self.path(digest)
        if dest.is_file():
            src.unlink()
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.stat().st_dev == self.blobs.stat().st_dev:
                os.replace(src, dest)
            else:  # a work dir on another filesystem: copy beside the target, then rename
                fd, staging = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-")
                os.close(fd)
                shutil.copyfile(src, staging)
                os.replace(staging, dest)
                src.unlink()
        return digest, size

    def delete(self, sha256: str) -> bool:
        try:
            self.path(sha256).unlink()
            return True
        except FileNotFoundError:
            return False

    def hashes(self) -> Iterator[str]:
        for p in self.blobs.glob("??/??/*"):
            if p.is_file() and not p.name.startswith("."):
                yield p.name

    @contextmanager
    def temp_dir(self, prefix: str) -> Iterator[Path]:
        """A private folder under tmp, removed whatever happens inside the block."""
        path = Path(tempfile.mkdtemp(dir=self.tmp, prefix=prefix))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def clear_tmp(self) -> int:
        """Remove what a dead process left in tmp; only safe when no other process shares this root."""
        removed = 0
        for p in self.tmp.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed += 1
        for p in self.blobs.glob("??/??/.incoming-*"):
            p.unlink(missing_ok=True)
            removed += 1
        return removed
