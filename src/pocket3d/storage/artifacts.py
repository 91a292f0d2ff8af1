"""Artifacts by content hash: inputs and outputs live once, under their SHA-256.

One interface, :class:`ArtifactStore`, with two backends: :class:`LocalArtifactStore` (a directory, the default)
and :class:`pocket3d.storage.s3.S3ArtifactStore` (any S3-compatible bucket). Whatever the backend, every process
keeps a local ``tmp`` folder: uploads are staged there, and a stage's inputs and outputs are files in a work dir
under it (workers read and write paths), which enter or leave the store by :meth:`ArtifactStore.put` and
:meth:`ArtifactStore.local_file`.

The local store keeps ``<root>/artifacts/ab/cd/abcd…`` beside ``tmp`` on the same filesystem, so a finished
file enters the store by an atomic rename: a crash leaves either the whole file or none of it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pocket3d.errors import ErrorCode, Pocket3DError

CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def blob_key(sha256: str) -> str:
    """Where a blob lives below the store's root or prefix: two levels of fan-out, as git does."""
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


class BlobMissing(FileNotFoundError):
    """The store has no blob with this hash (retention removed it, or it never arrived)."""


class StorageUnavailable(Pocket3DError):
    """The artifact store cannot be reached or refused a read or write: worth retrying later, not the user's
    fault."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(ErrorCode.STORAGE_UNAVAILABLE, message, details, headers={"Retry-After": "5"})


class ArtifactStore(ABC):
    """Blobs by SHA-256, plus this process's local ``tmp`` folder."""

    def __init__(self, root: Path):
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    # -- the blobs ------------------------------------------------------------------------------------------

    @abstractmethod
    def put(self, src: Path, sha256: str | None = None) -> tuple[str, int]:
        """Store the file at ``src`` (under ``tmp``); returns (sha256, size). ``src`` is gone after a success and
        left for the caller to remove after a failure."""

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def delete(self, sha256: str) -> bool:
        """Remove a blob; False when there was none."""

    @abstractmethod
    def hashes(self) -> Iterator[str]:
        """Every stored blob's hash (for the retention sweep)."""

    @abstractmethod
    def local_file(self, sha256: str, work: Path) -> Path:
        """A file on this machine with the blob's bytes, valid while ``work`` exists; read it, never change it.
        Raises :class:`BlobMissing`."""

    @abstractmethod
    def open_range(self, sha256: str, start: int, end: int | None) -> Iterator[bytes]:
        """The blob's bytes ``start`` to ``end`` (inclusive; None: to the end), in chunks, for a proxied
        download. Raises :class:`BlobMissing` before the first chunk."""

    def local_path(self, sha256: str) -> Path | None:
        """Where the blob is on this machine's disk, when the backend keeps it there (downloads are then sent
        as files); None for a remote store."""
        return None

    def download_url(self, sha256: str, *, filename: str, media_type: str) -> str | None:
        """A URL a client can fetch the blob from directly (a presigned URL), when the backend is configured to
        hand out such URLs; None: downloads go through this server. Raises :class:`BlobMissing`."""
        return None

    def problem(self) -> str | None:
        """Why the store cannot be used right now (for readiness), or None."""
        return None

    # -- the local tmp folder -------------------------------------------------------------------------------

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
        return removed


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path):
        super().__init__(root)
        self.blobs = root / "artifacts"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.blobs / blob_key(sha256)

    def local_path(self, sha256: str) -> Path | None:
        return self.path(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, src: Path, sha256: str | None = None) -> tuple[str, int]:
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

    def local_file(self, sha256: str, work: Path) -> Path:
        path = self.path(sha256)
        if not path.is_file():
            raise BlobMissing(f"artifact {sha256} is not stored")
        return path

    def open_range(self, sha256: str, start: int, end: int | None) -> Iterator[bytes]:
        try:
            f = open(self.path(sha256), "rb")
        except FileNotFoundError:
            raise BlobMissing(f"artifact {sha256} is not stored") from None
        return _read_range(f, start, end)

    def clear_tmp(self) -> int:
        removed = super().clear_tmp()
        for p in self.blobs.glob("??/??/.incoming-*"):
            p.unlink(missing_ok=True)
            removed += 1
        return removed


def _read_range(f, start: int, end: int | None) -> Iterator[bytes]:
    with f:
        f.seek(start)
        left = None if end is None else end - start + 1
        while left is None or left > 0:
            block = f.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                return
            if left is not None:
                left -= len(block)
            yield block
