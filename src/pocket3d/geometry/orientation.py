"""Which way is up: the up axis of a mesh input, and the rotation that makes it glTF's Y-up, +Z forward.

glTF, GLB and FBX say which axis is up (FBX in its header, which Blender's importer reads and turns into glTF's
convention), so a file in one of them is taken at its word. OBJ, PLY and STL say nothing; the shape decides,
between Y and Z (an object is modelled upright, seldom upside down or on its side):

    For each candidate axis, how broadly the shape stands on a base at the low end, and how much broader that
    base is than the high end: the score is base x (base / top). A base is the convex hull of the vertices within
    3 % (of the largest extent) of that end plus the surface facing away from the shape there, both as shares of
    the bounding rectangle across the axis. The axis with the higher score is up.

A character or a creature stands on its feet or paws and ends in a head or a back: its up axis stands out (the
shared TRELLIS exports, all Z-up, score 6 to 140 times higher along Z). Tried on the built-in text model's 23
object classes (two seeds each, written Y-up and Z-up) it reads 81 of 92 right; what it misreads looks alike
from either end along both axes (a table whose top is as broad as its legs' footprint, a tree on a thin trunk).
When the two scores are within 10 % of each other the format's own habit decides, as Blender's importers assume
it: Y for OBJ, Z for STL and PLY. ``parameters.up_axis`` overrides all of this.

Z-up models face -Y (Blender's convention), so turning one Y-up is -90 degrees about X: (x, y, z) -> (x, z, -y),
which brings its front to +Z, glTF's forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import trimesh
from scipy.spatial import ConvexHull, QhullError

from pocket3d.geometry.meshes import world_instances, world_meshes

UpAxis = Literal["y", "z"]
# How a format is read, by what it declares or what tools assume of it (Blender's importers' defaults).
DECLARED_UP: dict[str, UpAxis] = {"glb": "y", "gltf": "y", "fbx": "y"}
HABITUAL_UP: dict[str, UpAxis] = {"obj": "y", "ply": "z", "stl": "z"}
BASE_SLAB = 0.03  # of the largest extent: the slab at each end in which the base is measured
TIE = np.log(1.1)  # scores within 10 % of each other say nothing: the format's habit decides
EMPTY_BASE = 0.02  # added to every base share, so a pointed end (no base at all) does not divide by zero

# Rotations that make a given up axis +Y (applied as R @ v). Z-up, -Y front -> Y-up, +Z front.
TO_Y_UP: dict[UpAxis, np.ndarray] = {"y": np.eye(3), "z": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0],
                                                                     [0.0, -1.0, 0.0]])}
ROTATION_NAMES: dict[UpAxis, tuple[str, float]] = {"z": ("x", -90.0)}
# What STL and PLY are written in (4x4): Y-up, +Z forward -> Z-up, -Y forward; +90 degrees about X.
Y_UP_TO_Z_UP = np.eye(4)
Y_UP_TO_Z_UP[:3, :3] = TO_Y_UP["z"].T


@dataclass(frozen=True)
class Orientation:
    """What was found out about a mesh input's up axis, and what was done about it."""

    up: UpAxis
    source: Literal["format", "shape", "convention", "parameter"]  # how ``up`` was decided
    scores: dict[str, float] | None = None  # "shape" and "convention": each axis's base score

    @property
    def rotation(self) -> np.ndarray:
        return TO_Y_UP[self.up]

    @property
    def rotated(self) -> bool:
        return self.up != "y"

    def as_dict(self) -> dict:
        """The job's record: ``{detected, source, applied_rotation}`` (the rotation None when none was needed)."""
        applied = None
        if self.rotated:
            axis, degrees = ROTATION_NAMES[self.up]
            applied = {"axis": axis, "degrees": degrees, "matrix": self.rotation.tolist()}
        out: dict = {"detected": self.up, "source": self.source, "applied_rotation": applied}
        if self.scores is not None:
            out["scores"] = {k: round(v, 3) for k, v in self.scores.items()}
        return out


def orientation_of(scene: trimesh.Scene, fmt: str, given: str = "auto") -> Orientation:
    """The up axis of a mesh file read into ``scene`` (see the module docstring)."""
    if given in TO_Y_UP:
        return Orientation(given, "parameter")  # type: ignore[arg-type]
    if fmt in DECLARED_UP:
        return Orientation(DECLARED_UP[fmt], "format")
    meshes = world_meshes(scene)
    if not meshes:
        return Orientation(HABITUAL_UP.get(fmt, "y"), "convention")
    mesh = meshes[0] if len(meshes) == 1 else trimesh.util.concatenate(
        [trimesh.Trimesh(m.vertices, m.faces, process=False) for m in meshes])
    scores = {"y": base_score(mesh, 1), "z": base_score(mesh, 2)}
    margin = np.log(scores["z"]) - np.log(scores["y"])
    if abs(margin) < TIE:
        return Orientation(HABITUAL_UP.get(fmt, "y"), "convention", scores)
    return Orientation("z" if margin > 0 else "y", "shape", scores)


def base_score(mesh: trimesh.Trimesh, axis: int) -> float:
    """How broadly the shape stands on the low end of ``axis``, and how much more than on its high end."""
    base, top = _base_share(mesh, axis, 1.0) + EMPTY_BASE, _base_share(mesh, axis, -1.0) + EMPTY_BASE
    return base * base / top


def _base_share(mesh: trimesh.Trimesh, axis: int, sign: float) -> float:
    """The base at one end of the axis (sign 1: the low end), as a share of the bounding rectangle across it."""
    used = np.asarray(mesh.vertices)[np.unique(mesh.faces)]
    if len(used) == 0:
        return 0.0
    across = [a for a in range(3) if a != axis]
    extents = np.ptp(used, axis=0)
    rectangle = float(extents[across[0]] * extents[across[1]])
    if rectangle <= 0:
        return 0.0
    slab = BASE_SLAB * float(extents.max())
    height = sign * used[:, axis]
    footprint = _hull_area(used[height <= height.min() + slab][:, across])
    centres = sign * mesh.triangles_center[:, axis]
    facing_away = sign * mesh.face_normals[:, axis] < -0.7
    resting = float(mesh.area_faces[(centres <= height.min() + slab) & facing_away].sum())
    return (footprint + resting) / rectangle


def _hull_area(points: np.ndarray) -> float:
    if len(points) < 3:
        return 0.0
    try:
        return float(ConvexHull(points).volume)  # in 2D, "volume" is the area
    except (QhullError, ValueError):  # all on a line: no area
        return 0.0


def turned(scene: trimesh.Scene, rotation: np.ndarray) -> trimesh.Scene:
    """The scene with every mesh instance in world coordinates, turned by ``rotation`` (vertices and normals;
    UVs, materials and names kept). Node transforms are baked in, so a model that reads only the meshes' own
    coordinates sees the turned shape too."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    out = trimesh.Scene()
    for node, name, mesh in world_instances(scene):
        mesh.apply_transform(matrix)
        out.add_geometry(mesh, node_name=node, geom_name=name if name not in out.geometry else f"{name}_{node}")
    out.metadata.update(scene.metadata)
    return out
