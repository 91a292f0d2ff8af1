"""Getting input bytes onto disk: multipart uploads streamed chunk by chunk, and base64 data URIs.

Both land in a temporary file under the artifact store's tmp folder with their SHA-256 computed on the way,
within the size limit, and are removed if anything goes wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from pocket3d.errors import ErrorCode, Pocket3DError, storage_failure

FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024  # other form fields are ignored, but not without bound


@dataclass
class StagedFile:
    path: Path
    sha256: str
    size: int
    filename: str | None
    content_type: str | None = None  # the multipart part's Content-Type, as the client declared it
    fields: dict[str, str] = field(default_factory=dict)  # the form's other (small, text) fields

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _FilePartSink:
    """python-multipart callbacks that write the ``file`` part to disk as it arrives."""

    def __init__(self, tmp_dir: Path, limit: int):
        self.limit = limit
        self.complete = False  # the closing boundary arrived: the body was not cut off
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        self.path = Path(name)
        self.out = os.fdopen(fd, "wb")
        self.hasher = hashlib.sha256()
        self.size = 0
        self.other_bytes = 0
        self.filename: str | None = None
        self.content_type: str | None = None
        self.seen_file = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self._field: str | None = None  # the text field whose value arrives
        self._value = bytearray()
        self.fields: dict[str, str] = {}

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field_cb,
            "on_header_value": self._header_value_cb, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def _header_field_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        raw = params.get(b"filename")
        if name == FIELD and not self.seen_file:
            self._in_file = self.seen_file = True
            self.filename = os.path.basename(raw.decode("utf-8", "replace"))[:255] if raw else None
            declared = self._headers.get(b"content-type")
            self.content_type = declared.decode("latin-1").strip().lower() if declared else None
        elif raw is not None:
            raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"send one file, in the form field {FIELD!r} "
                                f"(got a file in {name!r})", hint=UPLOAD_HINT)
        else:
            self._field = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if not self._in_file:
            self.other_bytes += len(chunk)
            if self.other_bytes > MAX_FIELD_BYTES:
                raise Pocket3DError(ErrorCode.REQUEST_TOO_LARGE, "form fields other than 'file' are too large")
            self._value += chunk
            return
        self.size += len(chunk)
        if self.size > self.limit:
            raise _file_too_large(self.limit)
        self.hasher.update(chunk)
        self.out.write(chunk)

    def _part_end(self) -> None:
        if self._field is not None:
            self.fields[self._field] = self._value.decode("utf-8", "replace")
        self._in_file, self._field = False, None
        self._value = bytearray()

    def _end(self) -> None:
        self.complete = True


def _file_too_large(limit: int) -> Pocket3DError:
    return Pocket3DError(ErrorCode.FILE_TOO_LARGE, f"the file is larger than storage.max_file_size ({limit} bytes)",
                         {"max_file_size": limit}, hint="decimate the mesh or downscale the image first; the server's "
                         "operator sets the limit (storage.max_file_size)")


async def receive_upload(request: Request, tmp_dir: Path, limit: int) -> StagedFile:
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise Pocket3DError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                            "upload with Content-Type multipart/form-data and the file in a field named 'file'",
                            hint=UPLOAD_HINT)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + MAX_FIELD_BYTES:
        raise _file_too_large(limit)
    boundary = params[b"boundary"]
    if len(boundary) > 200:  # RFC 2046 allows 70; the parser refuses what it cannot handle with a bare error
        raise Pocket3DError(ErrorCode.INVALID_REQUEST, "the multipart boundary is too long")
    sink = _FilePartSink(tmp_dir, limit)
    try:
        try:
            parser = MultipartParser(boundary, sink.callbacks())
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        finally:
            sink.out.close()
        if not sink.complete:
            raise Pocket3DError(ErrorCode.INVALID_REQUEST, "the multipart body ended before its closing boundary "
                                "(the upload was cut off)")
        if not sink.seen_file:
            raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"no form field named {FIELD!r} holding the file",
                                hint=UPLOAD_HINT)
        if sink.size == 0:
            raise Pocket3DError(ErrorCode.EMPTY_UPLOAD, "the uploaded file is empty", hint=UPLOAD_HINT)
    except ClientDisconnect:
        sink.path.unlink(missing_ok=True)
        raise
    except Pocket3DError:
        sink.path.unlink(missing_ok=True)
        raise
    except Exception as e:  # the multipart parser's own errors: a malformed body; or the disk refusing the file
        sink.path.unlink(missing_ok=True)
        if storage_failure(e) is not None:
            raise
        raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"malformed multipart body: {e}") from None
    return StagedFile(sink.path, sink.hasher.hexdigest(), sink.size, sink.filename, sink.content_type, sink.fields)


async def receive_raw(request: Request, tmp_dir: Path, limit: int) -> StagedFile:
    """A request body that is the file itself (a PUT to an upload URL), streamed to disk within ``limit``."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise _file_too_large(limit)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
    path, hasher, size = Path(name), hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _file_too_large(limit)
                hasher.update(chunk)
                out.write(chunk)
        if size == 0:
            raise Pocket3DError(ErrorCode.EMPTY_UPLOAD, "the uploaded file is empty")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return StagedFile(path, hasher.hexdigest(), size, None, request.headers.get("content-type"))


UPLOAD_HINT = "send the file as multipart/form-data in a field named 'file': curl -F file=@chair.png …/api/v1/files"
DATA_URI_HINT = ("encode the file's bytes in base64 (`base64 -w0 chair.png`) after data:image/png;base64, — or upload "
                 "it with POST /api/v1/files and pass the file_id")
_DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[\w.-]+)*;base64,", re.ASCII)


def is_data_uri(ref: str) -> bool:
    return ref.startswith("data:")


def stage_data_uri(ref: str, tmp_dir: Path, limit: int) -> StagedFile:
    m = _DATA_URI.match(ref)
    if m is None:
        raise Pocket3DError(ErrorCode.INVALID_DATA_URI, "a data URI must look like data:<type>;base64,<data>",
                            hint=DATA_URI_HINT)
    payload = ref[m.end():]
    if len(payload) * 3 // 4 > limit:
        raise _file_too_large(limit)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Pocket3DError(ErrorCode.INVALID_DATA_URI, f"the data URI is not valid base64: {e}",
                            hint=DATA_URI_HINT) from None
    if not data:
        raise Pocket3DError(ErrorCode.EMPTY_UPLOAD, "the data URI holds no data")
    return stage_bytes(data, tmp_dir)


def stage_bytes(data: bytes, tmp_dir: Path, filename: str | None = None) -> StagedFile:
    """Bytes already in memory (a data URI's, a fetched URL's) as a staged file."""
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="inline-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return StagedFile(Path(name), hashlib.sha256(data).hexdigest(), len(data), filename)
