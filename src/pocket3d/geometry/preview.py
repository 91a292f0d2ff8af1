"""A PNG thumbnail of a mesh: a small software render (painter's algorithm, Lambert shading) from a
three-quarter front view, upright (the scene is Y-up, as every mesh pocket3d holds), framed on the whole bounding
box, and the same renderer's views from around the object (front, left, back, right). Fast enough for every output:
large meshes are decimated for the picture first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image, ImageDraw
from scipy.spatial import cKDTree

from pocket3d.geometry.decimate import decimate_mesh
from pocket3d.geometry.gltf_writer import is_segmented
from pocket3d.geometry.meshes import world_meshes

MAX_FACES = 20_000
FILL = 0.92  # of the picture's side taken by the model's turned bounding box
LIGHT = np.array([0.4, 0.8, 0.6]) / np.linalg.norm([0.4, 0.8, 0.6])


# Distinct, saturated colours for parts (Tableau 10, its grey swapped for cyan), so a segmentation's preview shows its parts.
PART_COLOURS = np.array([(78, 121, 167), (242, 142, 43), (225, 87, 89), (118, 183, 178), (89, 161, 79),
                         (237, 201, 72), (176, 122, 161), (255, 157, 167), (156, 117, 95), (23, 190, 207)], float)


# The views render_views draws: cameras at these azimuths (degrees about the vertical axis, from the front, +Z)
# and at the object's height, so a view shows its silhouette as a multiview model's input would.
VIEW_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)  # front, left (the object's own left side), back, right


def render_views(scene: trimesh.Scene, dests: list[Path], size: int = 512) -> None:
    """One picture a camera of VIEW_AZIMUTHS (in that order, as many as ``dests``), level with the object."""
    for dest, azimuth in zip(dests, VIEW_AZIMUTHS, strict=False):
        render_preview(scene, dest, size, azimuth=azimuth, elevation=0.0)


def render_preview(scene: trimesh.Scene, dest: Path, size: int = 256, *, azimuth: float = 35.0,
                   elevation: float = 20.0) -> None:
    """From a camera at ``azimuth`` degrees about the vertical axis (0: in front, +Z; 90: at the object's left,
    +X) and ``elevation`` degrees above it. A segmented scene (see gltf_writer.is_segmented) shows each part in a
    colour of its own rather than its material's."""
    meshes = world_meshes(scene)
    if is_segmented(scene.metadata):
        colors = np.concatenate([np.tile(PART_COLOURS[i % len(PART_COLOURS)], (len(m.faces), 1))
                                 for i, m in enumerate(meshes)])
    else:
        colors = np.concatenate([_face_colors(m) for m in meshes])
    mesh = trimesh.util.concatenate([trimesh.Trimesh(m.vertices, m.faces, process=False) for m in meshes])
    if len(mesh.faces) > MAX_FACES:  # a picture needs no more; each kept face takes the colour nearest to it
        small = decimate_mesh(mesh, MAX_FACES)
        colors = colors[cKDTree(mesh.triangles_center).query(small.triangles_center)[1]]
        mesh = small
    # Turn the object about the vertical axis (+Y, glTF's up: the mesh is upright) so the camera's side faces the
    # viewer (+Z), then tilt it towards the viewer.
    rot = (trimesh.transformations.rotation_matrix(np.radians(elevation), [1, 0, 0])
           @ trimesh.transformations.rotation_matrix(np.radians(-azimuth), [0, 1, 0]))[:3, :3]
    verts = mesh.vertices @ rot.T
    # Framed on the whole bounding box: its eight corners, turned, fit the picture with a margin, centred. Every
    # vertex lies inside the box, so nothing is cut off, whatever the shape.
    corners = trimesh.bounds.corners(mesh.bounds) @ rot.T
    low, high = corners[:, :2].min(axis=0), corners[:, :2].max(axis=0)
    scale = FILL * size / (float((high - low).max()) or 1.0)
    middle = (low + high) / 2
    xy = np.column_stack([(verts[:, 0] - middle[0]) * scale + size / 2, size / 2 - (verts[:, 1] - middle[1]) * scale])
    tris = verts[mesh.faces]
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    normals = normals / np.where(lengths > 0, lengths, 1)[:, None]
    shade = 0.35 + 0.65 * np.abs(normals @ LIGHT)
    order = np.argsort(tris[:, :, 2].mean(axis=1))  # far to near (the viewer looks down -z)
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    pts = xy[mesh.faces]
    rgb = np.clip(colors * shade[:, None], 0, 255).astype(int)
    for i in order:
        draw.polygon([tuple(p) for p in pts[i]], fill=(*rgb[i], 255))
    image.save(dest, format="PNG")


def _face_colors(mesh: trimesh.Trimesh) -> np.ndarray:
    """One RGB colour a face, from vertex colours, the texture at the face's UV centre, or a material colour."""
    visual = mesh.visual
    grey = np.full((len(mesh.faces), 3), 180.0)
    try:
        if visual.kind == "vertex":
            return np.asarray(visual.vertex_colors, dtype=float)[mesh.faces, :3].mean(axis=1)
        if visual.kind == "face":
            return np.asarray(visual.face_colors, dtype=float)[:, :3]
        if visual.kind == "texture" and visual.uv is not None:
            image = getattr(visual.material, "baseColorTexture", None)
            if image is None:
                image = getattr(visual.material, "image", None)
            if image is not None:
                tex = np.asarray(image.convert("RGB"), dtype=float)
                uv = visual.uv[mesh.faces].mean(axis=1) % 1.0
                px = (uv[:, 0] * (tex.shape[1] - 1)).astype(int)
                py = ((1 - uv[:, 1]) * (tex.shape[0] - 1)).astype(int)
                return tex[py, px]
        for attr in ("baseColorFactor", "diffuse"):
            base = getattr(getattr(visual, "material", None), attr, None)
            if base is not None:
                rgb = np.asarray(base, dtype=float).ravel()[:3]
                return np.resize(rgb * 255.0 if rgb.max() <= 1 else rgb, (len(mesh.faces), 3))
    except Exception:  # an odd material should cost the picture its colours, not the job
        return grey
    return grey
