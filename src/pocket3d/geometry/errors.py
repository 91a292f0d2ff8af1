"""Why a mesh was refused, with the stable code the API answers with."""

from __future__ import annotations

from pocket3d.errors import ErrorCode


class MeshError(Exception):
    """A mesh that does not parse, holds nothing usable, or is larger than the configured limits."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INVALID_MESH, details: dict | None = None, *,
                 hint: str | None = None):
        super().__init__(message)
        self.code = code
        self.details = details or {}
        self.hint = hint  # what the sender can do about it, where that is obvious
