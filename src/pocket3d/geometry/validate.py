"""Loading a mesh for use: it must parse, hold triangles with some area, have finite coordinates within a sane
range and in-range indices, and stay under the configured size limits. Every model sees only meshes that passed.

Sizes are counted as the models will see them: over the scene graph's instances (one 20,000-face mesh placed by
300 nodes is 6 million faces to every model that flattens the scene), and the coordinates after each node's
transform."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from pocket3d.errors import ErrorCode
from pocket3d.geometry.errors import MeshError
from pocket3d.geometry.formats import FORMATS, gltf, obj, zipped


@dataclass(frozen=True)
class MeshLimits:
    max_faces: int = 2_000_000  # over all instances
    max_vertices: int = 2_000_000
    max_nodes: int = 10_000  # scene graph nodes
    # Pixels of a mesh's textures, all of them together. A texture is decoded whole by whatever reads its colours
    # (tens of bytes a pixel on the way): a 20 KB file can carry a 13000x13000 one.
    max_texture_pixels: int = 8192 * 8192
    # Largest absolute world coordinate. Far beyond any object in metres (or millimetres); what lies beyond it
    # overflows float32 arithmetic (squares, cross products) in the models.
    max_coordinate: float = 1e7
    # A mesh zip (formats.zipped): its entries, and the bytes they unpack to.
    max_zip_entries: int = 256
    max_unpacked_bytes: int = 500 * 1024 * 1024

    @property
    def max_allocated_bytes(self) -> int:
        """What reading a mesh may allocate beyond the file's own bytes: a mesh at the limits with every common
        vertex attribute (128 bytes a vertex) and its indices."""
        return self.max_vertices * 128 + self.max_faces * 12


LOADABLE = frozenset(name for name, f in FORMATS.items() if f.loader is not None)


def load_scene(path: Path, fmt: str, limits: MeshLimits = MeshLimits()) -> trimesh.Scene:
    """The mesh file at ``path`` (``fmt``: its format; an OBJ or glTF may come as a zip with its files), checked."""
    spec = FORMATS.get(fmt)
    if spec is None or spec.loader is None:
        raise MeshError(f"{fmt.upper()} files cannot be read here")
    if fmt in zipped.MESH_SUFFIXES.values() and zipped.is_zip(path):
        return _load_zip(path, limits)
    if fmt in ("glb", "gltf"):
        _check_declared(gltf.declared(path, fmt), limits)
    elif fmt == "obj":
        _check_material_groups(path.read_bytes(), limits)
    try:
        scene = spec.loader(path)
    except MeshError:  # the loader's own verdict (a malformed FBX, a busy Blender), as it said it
        raise
    except Exception as e:  # trimesh raises many types for malformed files
        raise MeshError(f"the {fmt.upper()} file does not parse: {_short(e)}") from None
    check(scene, limits)
    return scene


def zip_format(path: Path, limits: MeshLimits = MeshLimits()) -> str:
    """The format of the mesh in a mesh zip (raises MeshError if the zip is refused)."""
    with zipped.opened(path, limits.max_zip_entries, limits.max_unpacked_bytes) as bundle:
        return bundle.format


def _load_zip(path: Path, limits: MeshLimits) -> trimesh.Scene:
    with zipped.opened(path, limits.max_zip_entries, limits.max_unpacked_bytes) as bundle:
        if bundle.format in ("glb", "gltf"):
            _check_declared(gltf.declared(io.BytesIO(bundle.read(bundle.main)), bundle.format), limits)
        elif bundle.format == "obj":
            _check_material_groups(bundle.read(bundle.main), limits)
        try:
            scene = bundle.load()
        except MeshError:
            raise
        except Exception as e:
            raise MeshError(f"{bundle.main} in the zip does not parse: {_short(e)}") from None
    check(scene, limits)
    return scene


def check(scene: trimesh.Scene, limits: MeshLimits) -> None:
    _check_nodes(len(scene.graph.nodes), limits)
    meshes = {name: g for name, g in scene.geometry.items() if isinstance(g, trimesh.Trimesh)}
    instances = _instances(scene, meshes)
    faces = sum(len(meshes[name].faces) for _, name in instances)
    vertices = sum(len(meshes[name].vertices) for _, name in instances)
    if faces == 0:
        raise MeshError("the file holds no triangles")
    if faces > limits.max_faces or vertices > limits.max_vertices:
        placed = f" ({len(meshes)} mesh(es) placed {len(instances)} times)" if len(instances) > len(meshes) else ""
        raise MeshError(f"the mesh has {faces} faces and {vertices} vertices{placed}; at most {limits.max_faces} "
                        f"faces and {limits.max_vertices} vertices are accepted", ErrorCode.MESH_TOO_LARGE,
                        {"faces": faces, "vertices": vertices, "instances": len(instances),
                         "max_faces": limits.max_faces, "max_vertices": limits.max_vertices})
    for g in meshes.values():
        if not np.isfinite(g.vertices).all():
            raise MeshError("the mesh has non-finite vertex coordinates (NaN or infinity)")
        if len(g.faces) and (g.faces.min() < 0 or g.faces.max() >= len(g.vertices)):
            raise MeshError("face indices point past the vertex list")
    _check_extent(meshes, instances, limits)
    _check_textures(scene, limits)


_TEXTURES = ("image", "baseColorTexture", "metallicRoughnessTexture", "normalTexture", "occlusionTexture",
             "emissiveTexture")


def _check_textures(scene: trimesh.Scene, limits: MeshLimits) -> None:
    """The textures' pixels together, by their headers (reading the file decoded none of them)."""
    images: dict[int, Image.Image] = {}
    for g in scene.geometry.values():
        material = getattr(getattr(g, "visual", None), "material", None)
        for sub in getattr(material, "materials", None) or [material]:
            for name in _TEXTURES:
                image = getattr(sub, name, None)
                if isinstance(image, Image.Image):
                    images[id(image)] = image
    pixels = sum(image.width * image.height for image in images.values())
    if pixels > limits.max_texture_pixels:
        largest = max(images.values(), key=lambda image: image.width * image.height)
        side = int(limits.max_texture_pixels ** 0.5)
        raise MeshError(f"the mesh's {len(images)} texture(s) hold {pixels} pixels (the largest "
                        f"{largest.width}x{largest.height}); at most {limits.max_texture_pixels} are accepted",
                        ErrorCode.MESH_TOO_LARGE, {"texture_pixels": pixels, "textures": len(images),
                                                   "max_texture_pixels": limits.max_texture_pixels},
                        hint=f"downscale its textures (to {side}x{side} in all, or less) and send it again")


def _check_material_groups(data: bytes, limits: MeshLimits) -> None:
    groups = obj.material_groups(data)
    most = min(limits.max_nodes, obj.MAX_MATERIAL_GROUPS)
    if groups > most:
        raise MeshError(f"the OBJ switches between {groups} materials (usemtl); at most {most} are accepted",
                        ErrorCode.MESH_TOO_LARGE, {"material_groups": groups, "max_material_groups": most},
                        hint="merge faces that share a look under one material")


def _check_declared(declared: gltf.Declared | None, limits: MeshLimits) -> None:
    """What a glTF's JSON declares, before trimesh builds it."""
    if declared is None:
        return
    _check_nodes(declared.nodes, limits)
    if declared.primitives > limits.max_nodes:
        raise MeshError(f"the meshes have {declared.primitives} primitives; at most {limits.max_nodes} are accepted",
                        ErrorCode.MESH_TOO_LARGE, {"primitives": declared.primitives, "max_nodes": limits.max_nodes})
    if declared.allocated_bytes > limits.max_allocated_bytes:
        raise MeshError(f"the accessors declare {declared.allocated_bytes >> 20} MB of data that the file does not "
                        f"hold as it is (sparse, strided or left to an extension); at most "
                        f"{limits.max_allocated_bytes >> 20} MB are accepted", ErrorCode.MESH_TOO_LARGE,
                        {"allocated_bytes": declared.allocated_bytes, "max_bytes": limits.max_allocated_bytes})


def _check_nodes(nodes: int, limits: MeshLimits) -> None:
    if nodes > limits.max_nodes:
        raise MeshError(f"the scene has {nodes} nodes; at most {limits.max_nodes} are accepted",
                        ErrorCode.MESH_TOO_LARGE, {"nodes": nodes, "max_nodes": limits.max_nodes})


def _instances(scene: trimesh.Scene, meshes: dict[str, trimesh.Trimesh]) -> list[tuple[np.ndarray, str]]:
    """(world transform, geometry name) of every placed triangle mesh; a mesh no node places counts once, as the
    exporters write it."""
    out: list[tuple[np.ndarray, str]] = []
    placed: set[str] = set()
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        if name in meshes:
            out.append((np.asarray(transform, dtype=np.float64), name))
            placed.add(name)
    out.extend((np.eye(4), name) for name in meshes.keys() - placed)
    return out


def _check_extent(meshes: dict[str, trimesh.Trimesh], instances: list[tuple[np.ndarray, str]],
                  limits: MeshLimits) -> None:
    """Every placed mesh's box in world space within ±max_coordinate, and the whole not a point or all flat
    slivers: such input overflows, divides by zero or never converges in the models."""
    lows, highs = [], []
    with np.errstate(over="ignore", invalid="ignore"):
        for transform, name in instances:
            mesh = meshes[name]
            if not len(mesh.faces):
                continue
            if not np.isfinite(transform).all():
                raise MeshError("a node's transform has non-finite values (NaN or infinity)")
            corners = trimesh.bounds.corners(mesh.bounds)
            world = corners @ transform[:3, :3].T + transform[:3, 3]
            lows.append(world.min(axis=0))
            highs.append(world.max(axis=0))
        low, high = np.min(lows, axis=0), np.max(highs, axis=0)
        largest = float(np.max(np.abs([low, high])))
    if not np.isfinite(largest) or largest > limits.max_coordinate:
        raise MeshError(f"the mesh reaches coordinate {largest:.3g}; coordinates beyond ±{limits.max_coordinate:g} "
                        "are refused (scale the model down, or move it near the origin)",
                        details={"largest_coordinate": largest if np.isfinite(largest) else None,
                                 "max_coordinate": limits.max_coordinate})
    if float(np.max(high - low)) <= 0.0:
        raise MeshError("the mesh has no extent: all its vertices are at one point")
    if all(_zero_area(meshes[name]) for name in {name for _, name in instances}):
        raise MeshError("every face of the mesh has zero area")


def _zero_area(mesh: trimesh.Trimesh, chunk: int = 65536) -> bool:
    """No face with area; in chunks, as almost every mesh answers with its first faces."""
    for start in range(0, len(mesh.faces), chunk):
        triangles = mesh.vertices[mesh.faces[start:start + chunk]]
        if np.any(np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])):
            return False
    return True


def _short(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:200] + "…"
