"""What a mesh file may read besides itself: nothing.

trimesh resolves the names a file mentions (a glTF buffer's ``uri``, an OBJ's ``mtllib`` and its textures) against
the file's folder. pocket3d's inputs sit under ``data_dir/tmp`` beside other uploads in progress, so a name there
must read nothing. glTF's ``data:`` URIs never reach a resolver.
"""

from __future__ import annotations

from trimesh.resolvers import Resolver


class NoOtherFiles(Resolver):
    def __init__(self, file_name: str | None = None) -> None:
        self.file_name = file_name  # what trimesh names an unnamed OBJ object after (FilePathResolver's base name)

    def get(self, key: str) -> bytes:
        raise ValueError(f"the file refers to another file ({key[:80]!r}); upload one self-contained file")

    def write(self, name: str, data: bytes) -> None:
        raise ValueError("nothing is written beside an input")

    def namespaced(self, namespace: str) -> "NoOtherFiles":
        return self

    def keys(self) -> list[str]:
        return []
