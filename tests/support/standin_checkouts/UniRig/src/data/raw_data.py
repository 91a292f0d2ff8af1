"""TEST STAND-IN for UniRig's mesh files (upstream src/data/raw_data.py ``RawData``): computes nothing real.

``RawData`` with upstream's fields, in upstream's order (vertices, vertex_normals, faces, face_normals, joints,
skin, parents, names, matrix_local, tails, no_skin, path, cls), ``save(path)`` (``np.savez`` of every field) and
``RawData.load(path)``, as upstream writes and reads ``raw_data.npz``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from numpy import ndarray


@dataclass(frozen=True)
class RawData:
    vertices: ndarray | None
    vertex_normals: ndarray | None
    faces: ndarray | None
    face_normals: ndarray | None
    joints: ndarray | None
    skin: ndarray | None
    parents: list | None
    names: list | None
    matrix_local: ndarray | None
    tails: ndarray | None = None
    no_skin: ndarray | None = None
    path: str | None = None
    cls: str | None = None

    @staticmethod
    def load(path: str) -> RawData:
        data = np.load(path, allow_pickle=True)
        fields = {name: data[name][()] for name in data}
        fields["path"] = path
        return RawData(**fields)

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(file=path, **self.__dict__)
