from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from pocket3d.api import downloads, media, uploads
from pocket3d.api.deps import NodeDep, PrincipalDep
from pocket3d.api.inputs import visible_file
from pocket3d.api.openapi import error_responses
from pocket3d.api.schemas import FileInfo, FilePage
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.api.views import file_view
from pocket3d.jobs import transitions
from pocket3d.jobs.records import NewFile
from pocket3d.jobs.store import new_id
from pocket3d.node import Node

router = APIRouter(tags=["Files"])
# The body is read as a stream (api.uploads), so FastAPI cannot infer it: declared here for the docs.
UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "contentMediaType": "application/octet-stream",
                            "description": "an image (PNG, JPEG, WebP), a mesh (GLB, glTF, OBJ, PLY, STL, FBX), or a "
                                           "zip of one OBJ or glTF with the files it names (MTL, textures, "
                                           "buffers); the type is read from the content, not the name"}}}}}}


def store_upload(node: Node, owner_id: str, staged: uploads.StagedFile, *, file_id: str | None = None) -> FileInfo:
    """Check the staged file (an image must decode, a mesh load) and keep it as an upload of ``owner_id`` (under
    ``file_id``, when the caller reserved one); the staged file is gone afterwards either way."""
    try:
        found = media.inspect(staged.path, node.settings.storage.max_image_pixels, node.settings.storage.mesh_limits)
        now = time.time()
        new = NewFile(id=file_id or new_id("file"), owner_id=owner_id, sha256=staged.sha256, size=staged.size,
                      media_type=found.media_type, kind=found.kind, format=found.format, filename=staged.filename)
        with node.blob_lock.writing(node.artifacts) as blobs:
            blobs.put(staged.path, staged.sha256)
            transitions.register_file(node.store, new, now=now, expires_at=now + node.settings.storage.file_lifetime)
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
    return await run_in_threadpool(store_upload, node, principal.owner_id, staged)


@router.get("/files", response_model=FilePage, responses=error_responses(401, 422), operation_id="listFiles",
            summary="Your uploads that have not expired, newest first")
def list_files(node: NodeDep, principal: PrincipalDep,
               cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
               limit: Annotated[int, Query(ge=1, le=100)] = 20) -> FilePage:
    """Uploads you can still name in a job, newest first, a page at a time: pass the answer's `next_cursor` as
    `cursor` for the next page (null on the last)."""
    owner = None if principal.is_admin else principal.owner_id
    files = node.store.list_files(owner, now=time.time(), before_id=cursor, limit=limit + 1)
    page = files[:limit]
    return FilePage(files=[file_view(f) for f in page], next_cursor=page[-1].id if len(files) > limit else None)


FileId = Annotated[str, Path(description="the file_id the upload answered",
                              examples=["file_01JD8X2K9Q4R7T1V3W5Y8Z0A2B"])]


@router.get("/files/{file_id}", response_model=FileInfo, responses=error_responses(401, 404, 410),
            operation_id="getFile", summary="An uploaded file's type, size and expiry")
def get_file(file_id: FileId, node: NodeDep, principal: PrincipalDep) -> FileInfo:
    """What the server made of an upload: its kind (image or mesh), format, size, sha256 and expiry. Any number
    of your jobs can use it until `expires_at`; after that it answers 410 FILE_EXPIRED."""
    return file_view(visible_file(node, principal, file_id,
                                  not_found_hint="file ids come from POST /api/v1/files and look like file_…"))


@router.delete("/files/{file_id}", status_code=204, responses=error_responses(401, 404, 410),
               operation_id="deleteFile", summary="Delete an upload now")
def delete_file(file_id: FileId, node: NodeDep, principal: PrincipalDep) -> Response:
    """The file answers 404 from now on and can no longer be named in a job. A job that already took it keeps it
    until that job ends."""
    visible_file(node, principal, file_id)
    transitions.delete_file(node.store, file_id)
    return Response(status_code=204)


_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get("/files/{file_id}/content", response_class=Response, operation_id="downloadFile",
            summary="An upload's bytes, as they were sent",
            responses={200: {"description": "the file; its media type is the upload's media_type",
                             "content": {"application/octet-stream": _BINARY},
                             "headers": {"ETag": {"description": "the file's sha256, quoted",
                                                  "schema": {"type": "string"}}}},
                       304: {"description": "not modified: the If-None-Match ETag is the file's"},
                       **error_responses(401, 404, 410)})
def download_file(file_id: FileId, request: Request, node: NodeDep, principal: PrincipalDep,
                  if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The bytes of one of your uploads while it is live, e.g. to show a job's input beside its result (the web app
    does). Honours `Range` and `If-None-Match` like an output's download."""
    record = visible_file(node, principal, file_id)
    etag = f'"{record.sha256}"'
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return downloads.artifact_response(
        node.artifacts, request, sha256=record.sha256, size=record.size, media_type=record.media_type,
        filename=record.filename or f"{record.id}.{record.format}",
        headers={"ETag": etag, "Cache-Control": "private, max-age=3600"},
        missing=Pocket3DError(ErrorCode.FILE_NOT_FOUND, f"file {file_id} is no longer stored",
                              {"file_id": file_id}, hint="upload it again with POST /api/v1/files"))
