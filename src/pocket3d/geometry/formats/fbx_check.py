"""A structural check of a binary FBX file before Blender reads it.

Blender's reader trusts the counts in each record: a record that claims four billion properties makes it allocate
four gigabytes before it finds out. This walks the same records (header, version, each node's end offset,
property count and list, nested records and their null sentinels, array sizes) without allocating anything
per record, and refuses a file whose records do not add up, nest too deep, or declare more array data than
a mesh of the accepted size could hold. Blender reads only binary FBX, from version 7100.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from pocket3d.errors import ErrorCode
from pocket3d.geometry.errors import MeshError

MAGIC = b"Kaydara FBX Binary  \x00\x1a\x00"
MIN_VERSION = 7100  # the oldest Blender reads
MAX_VERSION = 9999
MAX_DEPTH = 64
MAX_RECORDS = 2_000_000
MAX_ARRAY_BYTES = 1 << 30  # declared, decompressed: far more than a mesh of storage.max_mesh_faces needs
ZLIB_MAX_RATIO = 1032  # deflate cannot expand data more than this

_SCALAR = {ord("Z"): 1, ord("Y"): 2, ord("B"): 1, ord("C"): 1, ord("I"): 4, ord("F"): 4, ord("D"): 8, ord("L"): 8}
_BLOB = {ord("R"), ord("S")}
_ARRAY = {ord("b"): 1, ord("c"): 1, ord("i"): 4, ord("l"): 8, ord("f"): 4, ord("d"): 8}
_ARRAY_HEAD = struct.Struct("<III")
_U32 = struct.Struct("<I")


class _Malformed(Exception):
    def __init__(self, what: str, at: int):
        super().__init__(f"{what} (at byte {at})")


def check(path: Path, *, ascii_ok: bool = False) -> None:
    """Raise MeshError (INVALID_MESH, or UNSUPPORTED_MEDIA_TYPE for ASCII FBX) unless the records add up.
    ``ascii_ok``: an ASCII FBX passes (for readers other than Blender)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 4)
        if not head.startswith(MAGIC):
            if head.lstrip().startswith(b";"):
                if ascii_ok:
                    return
                raise MeshError("ASCII FBX cannot be read here (Blender reads binary FBX only); save it as binary FBX",
                                ErrorCode.UNSUPPORTED_MEDIA_TYPE)
            raise MeshError("the FBX file does not start with the binary FBX header")
        if len(head) < len(MAGIC) + 4:
            raise MeshError("the FBX file ends inside its header")
        version = _U32.unpack_from(head, len(MAGIC))[0]
        if not MIN_VERSION <= version <= MAX_VERSION:
            raise MeshError(f"FBX version {version} cannot be read (7100 or later)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                _Walk(data, size, version).top_level()
            except _Malformed as e:
                raise MeshError(f"the FBX file is malformed: {e}") from None


class _Walk:
    def __init__(self, data: mmap.mmap, size: int, version: int):
        self.data, self.size = data, size
        self.head = struct.Struct("<QQQB" if version >= 7500 else "<IIIB")
        self.sentinel = b"\x00" * self.head.size
        self.records = 0
        self.array_bytes = 0

    def top_level(self) -> None:
        pos = len(MAGIC) + 4
        while True:
            if pos + self.head.size > self.size:
                raise _Malformed("the file ends before its closing null record", pos)
            if self.head.unpack_from(self.data, pos)[0] == 0:
                return
            pos = self.record(pos, 1)

    def record(self, pos: int, depth: int) -> int:
        """Check the record at ``pos``; returns where it ends."""
        self.records += 1
        if self.records > MAX_RECORDS:
            raise _Malformed(f"more than {MAX_RECORDS} records", pos)
        if pos + self.head.size > self.size:
            raise _Malformed("a record header runs past the end of the file", pos)
        end, count, length, name_length = self.head.unpack_from(self.data, pos)
        props = pos + self.head.size + name_length
        props_end = props + length
        if end <= pos or end > self.size or props_end > end:
            raise _Malformed("a record's end offset or property list is out of bounds", pos)
        if count * 2 > length:  # every property takes at least a type byte and a value byte
            raise _Malformed(f"a record claims {count} properties in {length} bytes", pos)
        self.properties(props, props_end, count)
        if props_end == end:
            return end
        if depth >= MAX_DEPTH:
            raise _Malformed(f"records nest deeper than {MAX_DEPTH}", pos)
        children_end = end - self.head.size
        if children_end < props_end:
            raise _Malformed("a record is too short for its nested records", pos)
        child = props_end
        while child < children_end:
            child = self.record(child, depth + 1)
        if child != children_end or self.data[children_end:end] != self.sentinel:
            raise _Malformed("nested records do not end with a null record where their parent says", child)
        return end

    def properties(self, pos: int, end: int, count: int) -> None:
        data = self.data
        for _ in range(count):
            if pos >= end:
                raise _Malformed("a property list is shorter than its count", pos)
            kind = data[pos]
            pos += 1
            if kind in _SCALAR:
                pos += _SCALAR[kind]
            elif kind in _BLOB:
                if pos + 4 > end:
                    raise _Malformed("a string property runs past its record", pos)
                pos += 4 + _U32.unpack_from(data, pos)[0]
            elif kind in _ARRAY:
                if pos + _ARRAY_HEAD.size > end:
                    raise _Malformed("an array property runs past its record", pos)
                length, encoding, stored = _ARRAY_HEAD.unpack_from(data, pos)
                unpacked = length * _ARRAY[kind]
                if encoding == 0 and stored != unpacked:
                    raise _Malformed(f"an array of {length} values holds {stored} bytes", pos)
                if encoding == 1 and unpacked > stored * ZLIB_MAX_RATIO + 64:
                    raise _Malformed(f"a compressed array of {stored} bytes claims {length} values", pos)
                if encoding not in (0, 1):
                    raise _Malformed(f"unknown array encoding {encoding}", pos)
                self.array_bytes += unpacked
                if self.array_bytes > MAX_ARRAY_BYTES:
                    raise _Malformed(f"more than {MAX_ARRAY_BYTES >> 20} MB of array data", pos)
                pos += _ARRAY_HEAD.size + stored
            else:
                raise _Malformed(f"unknown property type {kind:#04x}", pos - 1)
            if pos > end:
                raise _Malformed("a property runs past its record", pos)
        if pos != end:
            raise _Malformed("a property list is longer than its properties", pos)
