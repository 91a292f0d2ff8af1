"""Artifact storage by content hash: a local directory (the default) or an S3-compatible bucket, behind one
interface (:class:`ArtifactStore`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pocket3d.storage.artifacts import (
    ArtifactStore,
    BlobMissing,
    LocalArtifactStore,
    StorageUnavailable,
    sha256_file,
)

__all__ = ["ArtifactStore", "BlobMissing", "LocalArtifactStore", "StorageUnavailable", "open_store", "sha256_file"]


def open_store(root: Path, storage: Any) -> ArtifactStore:
    """The store ``storage`` (config's StorageSettings) names, its local tmp folder under ``root``."""
    if storage.backend == "s3":
        from pocket3d.storage.s3 import S3ArtifactStore

        return S3ArtifactStore.from_settings(root, storage.s3)
    return LocalArtifactStore(root)
