"""Artifacts in an S3-compatible bucket, through boto3 (the ``s3`` extra).

Keys are ``<prefix>ab/cd/<sha256>``, as in the local store. Uploads go from a file in parts (boto3's transfer
manager reads each part from the file as it sends it, so a file is never held in memory); downloads to a work
dir go the same way. A failure to reach the store, or a refusal other than "no such key", is
:class:`StorageUnavailable` (503 STORAGE_UNAVAILABLE with Retry-After), never a user's error.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pocket3d.storage.artifacts import CHUNK, ArtifactStore, BlobMissing, StorageUnavailable, blob_key, sha256_file

log = logging.getLogger(__name__)

_KEY = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/([0-9a-f]{64})")
_MISSING = {"404", "NoSuchKey", "NotFound"}


def _boto3() -> Any:
    try:
        import boto3
        import botocore
    except ImportError:
        raise ImportError("storage.backend s3 needs boto3: pip install 'pocket3d[s3]'") from None
    return boto3, botocore


class S3ArtifactStore(ArtifactStore):
    def __init__(self, root: Path, *, bucket: str, prefix: str = "", endpoint: str | None = None,
                 region: str | None = None, addressing_style: str = "auto", redirect_downloads: bool = False,
                 public_endpoint: str | None = None, presign_seconds: int = 900, part_size: int = 16 << 20,
                 max_concurrency: int = 4):
        super().__init__(root)
        boto3, botocore = _boto3()
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self._errors = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
        self._client_error = botocore.exceptions.ClientError
        self.bucket, self.prefix = bucket, prefix
        self.redirect_downloads, self.presign_seconds = redirect_downloads, presign_seconds
        if addressing_style == "auto":
            addressing_style = "path" if endpoint else "virtual"
        config = Config(signature_version="s3v4", s3={"addressing_style": addressing_style},
                        retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=60,
                        max_pool_connections=max(10, 2 * max_concurrency))
        session = boto3.session.Session(region_name=region)
        self.client = session.client("s3", endpoint_url=endpoint, config=config)
        # Presigning is local arithmetic; a second client names the address clients use, where it differs.
        self._presigner = (session.client("s3", endpoint_url=public_endpoint, config=config)
                           if public_endpoint else self.client)
        self.transfer = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size,
                                       max_concurrency=max_concurrency, io_chunksize=CHUNK)

    @classmethod
    def from_settings(cls, root: Path, s3: Any) -> S3ArtifactStore:
        return cls(root, bucket=s3.bucket, prefix=s3.prefix, endpoint=s3.endpoint, region=s3.region,
                   addressing_style=s3.addressing_style, redirect_downloads=s3.downloads == "redirect",
                   public_endpoint=s3.public_endpoint, presign_seconds=s3.presign_seconds,
                   part_size=int(s3.part_size), max_concurrency=s3.max_concurrency)

    def key(self, sha256: str) -> str:
        return self.prefix + blob_key(sha256)

    # -- errors ---------------------------------------------------------------------------------------------

    def _missing(self, e: Exception) -> bool:
        return isinstance(e, self._client_error) and str(e.response.get("Error", {}).get("Code")) in _MISSING

    def _unavailable(self, doing: str, e: Exception) -> StorageUnavailable:
        log.warning("S3 %s failed: %s", doing, e)
        return StorageUnavailable(f"the artifact store failed to {doing}: {type(e).__name__}",
                                  {"bucket": self.bucket})

    def _head(self, sha256: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except self._errors as e:
            if self._missing(e):
                return None
            raise self._unavailable("look up an artifact", e) from e

    # -- the blobs ------------------------------------------------------------------------------------------

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def put(self, src: Path, sha256: str | None = None) -> tuple[str, int]:
        digest = sha256 or sha256_file(src)
        size = src.stat().st_size
        if self._head(digest) is None:  # content-addressed: the same bytes are stored once
            try:
                self.client.upload_file(str(src), self.bucket, self.key(digest), Config=self.transfer)
            except self._errors as e:
                raise self._unavailable("store an artifact", e) from e
        src.unlink()
        return digest, size

    def delete(self, sha256: str) -> bool:
        if self._head(sha256) is None:
            return False
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))
        except self._errors as e:
            raise self._unavailable("delete an artifact", e) from e
        return True

    def hashes(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    m = _KEY.fullmatch(obj["Key"][len(self.prefix):])
                    if m is not None:
                        yield m.group(1)
        except self._errors as e:
            raise self._unavailable("list the artifacts", e) from e

    def local_file(self, sha256: str, work: Path) -> Path:
        dest = work / sha256
        if dest.is_file():
            return dest
        fd, partial = tempfile.mkstemp(dir=work, prefix=".download-")
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self.key(sha256), partial, Config=self.transfer)
            os.replace(partial, dest)
        except self._errors as e:
            if self._missing(e):
                raise BlobMissing(f"artifact {sha256} is not stored") from None
            raise self._unavailable("fetch an artifact", e) from e
        finally:
            Path(partial).unlink(missing_ok=True)
        return dest

    def open_range(self, sha256: str, start: int, end: int | None) -> Iterator[bytes]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(sha256)}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            body = self.client.get_object(**args)["Body"]
        except self._errors as e:
            if self._missing(e):
                raise BlobMissing(f"artifact {sha256} is not stored") from None
            raise self._unavailable("read an artifact", e) from e
        return _stream(body)

    def download_url(self, sha256: str, *, filename: str, media_type: str) -> str | None:
        if not self.redirect_downloads:
            return None
        if self._head(sha256) is None:
            raise BlobMissing(f"artifact {sha256} is not stored")
        disposition = (f'attachment; filename="{filename}"' if quote(filename) == filename
                       else f"attachment; filename*=utf-8''{quote(filename)}")
        return self._presigner.generate_presigned_url(
            "get_object", ExpiresIn=self.presign_seconds,
            Params={"Bucket": self.bucket, "Key": self.key(sha256), "ResponseContentType": media_type,
                    "ResponseContentDisposition": disposition})

    def problem(self) -> str | None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._errors as e:
            return f"artifact store unreachable: bucket {self.bucket!r}: {type(e).__name__}: {e}"
        return None


def _stream(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()
