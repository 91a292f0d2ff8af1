"""Mesh I/O, validation, decimation, format export and previews. Imports nothing from the layers above it."""

from pocket3d.errors import ErrorCode
from pocket3d.geometry.decimate import decimate_mesh, decimate_scene
from pocket3d.geometry.errors import MeshError
from pocket3d.geometry.formats import FORMATS, MeshFormat, format_of, unavailable_formats
from pocket3d.geometry.meshes import merged, only_triangles
from pocket3d.geometry.gltf_writer import Skeleton, write_face_labels, write_segmented_glb, write_skinned_glb
from pocket3d.geometry.preview import VIEW_AZIMUTHS, render_preview, render_views
from pocket3d.geometry.validate import LOADABLE, MeshLimits, check, load_scene, zip_format


def export_scene(scene, fmt: str, dest) -> None:  # noqa: ANN001 - trimesh.Scene, Path
    spec = FORMATS.get(fmt)
    reason = spec.unavailable if spec else f"cannot write {fmt!r}"
    if spec is None or spec.exporter is None or reason:
        raise MeshError(reason or f"cannot write {fmt!r}", ErrorCode.FORMAT_UNAVAILABLE)
    spec.exporter(only_triangles(scene), dest)


__all__ = ["FORMATS", "LOADABLE", "VIEW_AZIMUTHS", "MeshError", "MeshFormat", "MeshLimits", "Skeleton", "check",
           "decimate_mesh", "decimate_scene", "export_scene", "format_of", "load_scene", "merged", "render_preview",
           "render_views", "unavailable_formats", "write_face_labels", "write_segmented_glb", "write_skinned_glb",
           "zip_format"]
