from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from pocket3d.api import media, uploads
from pocket3d.api.deps import NodeDep, PrincipalDep
from pocket3d.api.schemas import ErrorBody, FileInfo
from pocket3d.api.views import file_view
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import transitions
from pocket3d.jobs.records import NewFile
from pocket3d.jobs.store import new_id
from pocket3d.node import Node

router = APIRouter(tags=["Files"])
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 413, 415, 422)}


def _store_upload(node: Node, owner_id: str, staged: uploads.StagedFile) -> FileInfo:
    try:
        found = media.inspect(staged.path, node.settings.storage.max_image_pixels, node.settings.storage.mesh_limits)
        now = time.time()
        new = NewFile(id=new_id("file"), owner_id=owner_id, sha256=staged.sha256, size=staged.size,
                      media_type=found.media_type, kind=found.kind, format=found.format, filename=staged.filename)
        with node.blob_lock:
            node.artifacts.put(staged.path, staged.sha256)
            transitions.register_file(node.store, new, now=now, expires_at=now + node.settings.storage.cleanup_after)
    finally:
        staged.discard()
    record = node.store.get_file(new.id)
    assert record is not None
    return file_view(record)


@router.post("/files", status_code=201, response_model=FileInfo, responses=ERRORS,
             summary="Upload an image or a mesh (multipart field 'file')")
async def upload_file(request: Request, node: NodeDep, principal: PrincipalDep) -> FileInfo:
    staged = await uploads.receive_upload(request, node.artifacts.tmp, int(node.settings.storage.max_file_size))
    return await run_in_threadpool(_store_upload, node, principal.owner_id, staged)


@router.get("/files/{file_id}", response_model=FileInfo, responses={404: {"model": ErrorBody}})
def get_file(file_id: str, node: NodeDep, principal: PrincipalDep) -> FileInfo:
    record = node.store.get_file(file_id)
    if record is None or not principal.can_see(record.owner_id):
        raise Pocket3DError(ErrorCode.FILE_NOT_FOUND, f"file {file_id} not found")
    return file_view(record)
