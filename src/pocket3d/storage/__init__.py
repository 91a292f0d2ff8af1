"""Artifact storage by content hash (a local directory now; S3-compatible stores share the interface)."""

from pocket3d.storage.artifacts import LocalArtifactStore, sha256_file

__all__ = ["LocalArtifactStore", "sha256_file"]
