"""A mesh in one zip with the files it names: an OBJ with its MTL and images, a glTF (``.gltf`` or ``.glb``) with its
buffers and images. This is how a textured OBJ or a multi-file glTF is uploaded (a lone OBJ's texture would be lost)
and how pocket3d writes OBJ (``model.obj.zip``), so a job's OBJ output can be another job's input.

The zip is read in place, never unpacked: the names the mesh mentions (``mtllib``, ``map_Kd``, a buffer's or an
image's ``uri``) resolve to the zip's own entries and to nothing else, so nothing in the zip can reach the server's
disk. Refused before anything is read (INVALID_ARCHIVE; FILE_TOO_LARGE for the unpacked size): an entry named with
an absolute path, a drive, a backslash or a ``..`` component; a symbolic link; an encrypted entry; more entries or
more unpacked bytes than the limits; an entry packed more than ``MAX_RATIO`` to one (a zip bomb); no mesh, or more
than one. A name the mesh needs that the zip does not hold is refused too, naming it, rather than loaded without it.
"""

from __future__ import annotations

import io
import posixpath
import re
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import trimesh
from trimesh.resolvers import Resolver

from pocket3d.errors import ErrorCode
from pocket3d.geometry.errors import MeshError

MAGIC = b"PK\x03\x04"
MESH_SUFFIXES = {".obj": "obj", ".gltf": "gltf", ".glb": "glb"}
MAX_RATIO = 100  # unpacked : packed, for entries over RATIO_FROM bytes; text meshes pack about 3-10 to one
RATIO_FROM = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


def is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


@dataclass(frozen=True)
class MeshZip:
    """An opened, checked zip: ``main`` is the mesh's entry, ``format`` its format."""

    archive: zipfile.ZipFile
    main: str
    format: str
    names: frozenset[str]

    def read(self, name: str) -> bytes:
        return self.archive.read(name)  # zipfile stops at the size the entry declares and checks its CRC

    def load(self) -> trimesh.Scene:
        resolver = _ZipResolver(self)
        try:
            scene = trimesh.load(io.BytesIO(self.read(self.main)), file_type=self.format, resolver=resolver,
                                 force="scene", process=False)
        except Exception:
            if resolver.missing:  # a glTF without its buffer does not load at all: say which file it wanted
                raise self._missing(resolver.missing) from None
            raise
        if resolver.missing:  # an OBJ without its MTL or texture loads without them: refused all the same
            raise self._missing(resolver.missing)
        return scene

    def _missing(self, names: list[str]) -> MeshError:
        missing = sorted(set(names))
        return MeshError(f"{self.main} needs {', '.join(map(repr, missing))}, which the zip does not hold",
                         ErrorCode.INVALID_ARCHIVE, {"missing": missing},
                         hint="put every file the mesh names (its MTL, textures, buffers) in the zip, at the paths "
                         "it names them by")


@contextmanager
def opened(path: Path, max_entries: int, max_bytes: int) -> Iterator[MeshZip]:
    """The zip at ``path``, checked (see the module's doc), open for reading while the block runs."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise MeshError(f"the zip does not open: {e}", ErrorCode.INVALID_ARCHIVE) from None
    with archive:
        yield _checked(archive, max_entries, max_bytes)


def _checked(archive: zipfile.ZipFile, max_entries: int, max_bytes: int) -> MeshZip:
    entries = archive.infolist()
    if len(entries) > max_entries:
        raise MeshError(f"the zip holds {len(entries)} entries; at most {max_entries} are accepted",
                        ErrorCode.INVALID_ARCHIVE, {"entries": len(entries), "max_entries": max_entries})
    total, names = 0, set()
    for info in entries:
        name = info.filename
        if name.startswith("/") or "\\" in name or _DRIVE.match(name) or ".." in name.split("/"):
            raise MeshError(f"the zip names an entry outside itself: {name[:200]!r}", ErrorCode.INVALID_ARCHIVE,
                            hint="zip the files with paths relative to the zip's top folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise MeshError(f"the zip holds a symbolic link: {name[:200]!r}", ErrorCode.INVALID_ARCHIVE,
                            hint="put the file itself in the zip")
        if info.flag_bits & 0x1:
            raise MeshError(f"the zip entry {name[:200]!r} is encrypted", ErrorCode.INVALID_ARCHIVE)
        if info.is_dir():
            continue
        if name in names:
            raise MeshError(f"the zip holds {name[:200]!r} twice", ErrorCode.INVALID_ARCHIVE)
        if info.file_size > RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise MeshError(f"the zip entry {name[:200]!r} unpacks {info.file_size // max(info.compress_size, 1)} "
                            f"times larger than it is packed; more than {MAX_RATIO} times is refused",
                            ErrorCode.INVALID_ARCHIVE, {"entry": name, "max_ratio": MAX_RATIO})
        total += info.file_size
        if total > max_bytes:
            raise MeshError(f"the zip unpacks to more than {max_bytes} bytes (storage.max_file_size)",
                            ErrorCode.FILE_TOO_LARGE, {"max_bytes": max_bytes})
        names.add(name)
    meshes = sorted(n for n in names if posixpath.splitext(n)[1].lower() in MESH_SUFFIXES
                    and not posixpath.basename(n).startswith("."))
    if len(meshes) != 1:
        found = f"{len(meshes)} ({', '.join(meshes[:5])})" if meshes else "none"
        raise MeshError(f"a mesh zip holds one OBJ, glTF or GLB with the files it names; this one holds {found}",
                        ErrorCode.INVALID_ARCHIVE, {"meshes": meshes[:20]},
                        hint="zip one mesh with its MTL and textures (or its .bin and images)")
    main = meshes[0]
    return MeshZip(archive, main, MESH_SUFFIXES[posixpath.splitext(main)[1].lower()], frozenset(names))


class _ZipResolver(Resolver):
    """Names the mesh mentions, read from the zip: relative to the mesh's folder in it, or, failing that, the one
    entry with that file name (exporters often write the absolute path the texture had on their machine)."""

    def __init__(self, bundle: MeshZip):
        self.bundle = bundle
        self.base = posixpath.dirname(bundle.main)
        self.file_name = posixpath.basename(bundle.main)  # trimesh names an unnamed OBJ object after it
        self.missing: list[str] = []

    def _find(self, key: str) -> str | None:
        for candidate in dict.fromkeys((key, unquote(key))):
            name = candidate.replace("\\", "/")
            inside = posixpath.normpath(posixpath.join(self.base, name.lstrip("/")))
            if inside in self.bundle.names:
                return inside
            same = [n for n in self.bundle.names if posixpath.basename(n) == posixpath.basename(name)]
            if len(same) == 1:
                return same[0]
        return None

    def get(self, key: str) -> bytes:
        found = self._find(key)
        if found is None:
            self.missing.append(key[:200])
            raise OSError(f"{key!r} is not in the zip")  # trimesh skips what it cannot read; load() refuses
        return self.bundle.read(found)

    def write(self, name: str, data: bytes) -> None:
        raise ValueError("nothing is written into an input")

    def namespaced(self, namespace: str) -> _ZipResolver:
        return self

    def keys(self) -> list[str]:
        return sorted(self.bundle.names)
