from __future__ import annotations

import time

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from pocket3d.api import media, uploads
from pocket3d.api.deps import NodeDep, PrincipalDep
from pocket3d.api.openapi import error_responses
from pocket3d.api.schemas import FileInfo
from pocket3d.api.views import file_view
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import transitions
from pocket3d.jobs.records import NewFile
from pocket3d.jobs.store import new_id
from pocket3d.node import Node

router = APIRouter(tags=["Files"])
# The body is read as a stream (api.uploads), so FastAPI cannot infer it: declared here for the docs.
UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "contentMediaType": "application/octet-stream",
                            "description": "an image (PNG, JPEG, WebP) or a mesh (GLB, glTF, OBJ, PLY, STL, FBX); "
                                           "the type is read from the content, not the name"}}}}}}


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


@router.post("/files", status_code=201, response_model=FileInfo, responses=error_responses(400, 401, 413, 415, 422),
             operation_id="uploadFile", summary="Upload an image or a mesh (multipart field 'file')",
             openapi_extra={"requestBody": UPLOAD_BODY})
async def upload_file(request: Request, node: NodeDep, principal: PrincipalDep) -> FileInfo:
    """Upload an input once and use its `file_id` in jobs (`images`, `mesh`): `curl -F file=@chair.png
    …/api/v1/files`. The file is checked before it is stored: an image must decode, a mesh must load; too large
    answers 413. It is kept until `expires_at`."""
    staged = await uploads.receive_upload(request, node.artifacts.tmp, int(node.settings.storage.max_file_size))
    return await run_in_threadpool(_store_upload, node, principal.owner_id, staged)


@router.get("/files/{file_id}", response_model=FileInfo, responses=error_responses(401, 404),
            operation_id="getFile", summary="An uploaded file's type, size and expiry")
def get_file(file_id: Annotated[str, Path(description="the file_id the upload answered",
                                          examples=["file_01JD8X2K9Q4R7T1V3W5Y8Z0A2B"])],
             node: NodeDep, principal: PrincipalDep) -> FileInfo:
    """What the server made of an upload: its kind (image or mesh), format, size, sha256 and expiry."""
    record = node.store.get_file(file_id)
    if record is None or not principal.can_see(record.owner_id):
        raise Pocket3DError(ErrorCode.FILE_NOT_FOUND, f"file {file_id} not found",
                            hint="file ids come from POST /api/v1/files and look like file_…")
    return file_view(record)
