"""An upload as its owner meets it: live until its expires_at, then 410 FILE_EXPIRED; deleted or unknown, 404."""

from __future__ import annotations

import time

from pocket3d.api.keys import Principal
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs.records import FileRecord
from pocket3d.jobs.transitions import is_expired
from pocket3d.node import Node

UPLOAD_HINT = "upload it again with POST /api/v1/files"


def visible_file(node: Node, principal: Principal, file_id: str, field: str | None = None, *,
                 not_found_hint: str = "GET /api/v1/files lists your uploads") -> FileRecord:
    """The live upload ``file_id`` of this principal, or the 404/410 that says why not (``field``: where the
    request named it)."""
    where = f"{field}: " if field else ""
    details = {"file_id": file_id, **({"field": field} if field else {})}
    record = node.store.get_file(file_id)
    if record is not None and principal.can_see(record.owner_id):
        if not is_expired(record.expires_at, time.time()):
            return record
        expired = True
    else:
        owner = node.store.expired_file_owner(file_id) if record is None else None
        expired = owner is not None and principal.can_see(owner)
    if expired:
        raise Pocket3DError(ErrorCode.FILE_EXPIRED, f"{where}file {file_id} has expired", details, hint=UPLOAD_HINT)
    raise Pocket3DError(ErrorCode.FILE_NOT_FOUND, f"{where}file {file_id} not found", details, hint=not_found_hint)
