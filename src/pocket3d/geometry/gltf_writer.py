"""Writing glTF that trimesh cannot: skinned meshes (joints, inverse bind matrices, JOINTS_0/WEIGHTS_0) and
segmented meshes (one node per part, with ``extras.part_id``). Built with pygltflib, one binary buffer."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygltflib as g
import trimesh

FLOAT, UINT, USHORT, UBYTE = 5126, 5125, 5123, 5121
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
_DTYPES = {FLOAT: np.float32, UINT: np.uint32, USHORT: np.uint16, UBYTE: np.uint8}


class _GlbBuilder:
    def __init__(self) -> None:
        self.gltf = g.GLTF2(asset=g.Asset(generator="pocket3d", version="2.0"), scene=0)
        self.blob = bytearray()
        self._materials: dict[int, int] = {}

    def view(self, data: bytes, target: int | None = None) -> int:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))  # accessors need 4-byte alignment
        self.gltf.bufferViews.append(g.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(data),
                                                  target=target))
        self.blob.extend(data)
        return len(self.gltf.bufferViews) - 1

    def accessor(self, array: np.ndarray, component: int, target: int | None, *, bounds: bool = False,
                 normalized: bool = False) -> int:
        array = np.ascontiguousarray(array, dtype=_DTYPES[component])
        width = 1 if array.ndim == 1 else int(np.prod(array.shape[1:]))
        acc = g.Accessor(bufferView=self.view(array.tobytes(), target), componentType=component,
                         count=len(array), type=_TYPES[width], normalized=normalized or None)
        if bounds:
            flat = array.reshape(len(array), width)
            acc.min, acc.max = flat.min(axis=0).tolist(), flat.max(axis=0).tolist()
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def material(self, visual: trimesh.visual.base.Visuals) -> int | None:
        material = getattr(visual, "material", None)
        if material is None:
            return None
        if id(material) in self._materials:
            return self._materials[id(material)]
        pbr = g.PbrMetallicRoughness(metallicFactor=0.0, roughnessFactor=0.9)
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is not None:
            png = io.BytesIO()
            image.save(png, format="PNG")
            self.gltf.images.append(g.Image(bufferView=self.view(png.getvalue()), mimeType="image/png"))
            if not self.gltf.samplers:
                self.gltf.samplers.append(g.Sampler())
            self.gltf.textures.append(g.Texture(source=len(self.gltf.images) - 1, sampler=0))
            pbr.baseColorTexture = g.TextureInfo(index=len(self.gltf.textures) - 1)
        else:
            color = getattr(material, "baseColorFactor", None)
            if color is None:
                color = getattr(material, "diffuse", None)
            if color is not None:
                rgba = np.asarray(color, dtype=float).ravel()
                pbr.baseColorFactor = (rgba / 255.0 if rgba.max() > 1 else rgba).tolist()[:4]
        self.gltf.materials.append(g.Material(pbrMetallicRoughness=pbr, doubleSided=True))
        self._materials[id(material)] = len(self.gltf.materials) - 1
        return self._materials[id(material)]

    def primitive(self, mesh: trimesh.Trimesh, extra: dict[str, int] | None = None,
                  material: int | None = -1) -> g.Primitive:
        """``material``: an index already added, or -1 to add the mesh's own."""
        normals = np.array(mesh.vertex_normals, dtype=np.float64)
        lengths = np.linalg.norm(normals, axis=1)
        normals[lengths < 1e-6] = (0.0, 0.0, 1.0)  # unused vertices and degenerate faces: glTF wants unit normals
        attrs = g.Attributes(POSITION=self.accessor(mesh.vertices, FLOAT, ARRAY_BUFFER, bounds=True),
                             NORMAL=self.accessor(normals / np.linalg.norm(normals, axis=1)[:, None], FLOAT,
                                                  ARRAY_BUFFER))
        visual = mesh.visual
        if visual.kind == "texture" and getattr(visual, "uv", None) is not None and len(visual.uv) == len(mesh.vertices):
            uv = np.column_stack([visual.uv[:, 0], 1.0 - visual.uv[:, 1]])  # glTF's v runs down the image
            attrs.TEXCOORD_0 = self.accessor(uv, FLOAT, ARRAY_BUFFER)
        elif visual.kind == "vertex":
            attrs.COLOR_0 = self.accessor(visual.vertex_colors, UBYTE, ARRAY_BUFFER, normalized=True)
        for name, index in (extra or {}).items():
            setattr(attrs, name, index)
        return g.Primitive(attributes=attrs, indices=self.accessor(mesh.faces.ravel(), UINT, ELEMENT_ARRAY_BUFFER),
                           material=self.material(visual) if material == -1 else material, mode=4)

    def add_mesh(self, name: str, primitive: g.Primitive) -> int:
        self.gltf.meshes.append(g.Mesh(name=name, primitives=[primitive]))
        return len(self.gltf.meshes) - 1

    def add_node(self, node: g.Node) -> int:
        self.gltf.nodes.append(node)
        return len(self.gltf.nodes) - 1

    def save(self, dest: Path, roots: list[int], extras: dict | None = None) -> None:
        self.gltf.scenes = [g.Scene(nodes=roots, extras=extras or {})]
        self.gltf.buffers = [g.Buffer(byteLength=len(self.blob))]
        self.gltf.set_binary_blob(bytes(self.blob))
        self.gltf.save_binary(str(dest))


# -- skinned meshes ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Skeleton:
    names: list[str]
    parents: list[int]  # -1 for the root; a parent comes before its children
    heads: np.ndarray  # (J, 3) joint positions in the mesh's space, rest pose

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(self.parents) != n or self.heads.shape != (n, 3):
            raise ValueError("names, parents and heads must describe the same joints")
        if [p for p in self.parents if p < 0] != [-1] or self.parents[0] != -1:
            raise ValueError("joint 0 must be the one root")
        if any(p >= i for i, p in enumerate(self.parents) if p >= 0):
            raise ValueError("every joint's parent must come before it")


def top_weights(weights: np.ndarray, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest weights of each vertex and their joints, renormalised to sum to 1."""
    k = min(k, weights.shape[1])
    joints = np.argsort(-weights, axis=1)[:, :k]
    top = np.take_along_axis(weights, joints, axis=1).clip(min=0)
    sums = top.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        raise ValueError("every vertex needs a positive weight on some joint")
    top = top / sums
    joints[top <= 0] = 0  # glTF: an influence with no weight names joint 0 (else validators warn)
    if k < 4:  # glTF wants exactly four influences
        joints = np.pad(joints, ((0, 0), (0, 4 - k)))
        top = np.pad(top, ((0, 0), (0, 4 - k)))
    return joints.astype(np.uint16), top.astype(np.float32)


def write_skinned_glb(mesh: trimesh.Trimesh, skeleton: Skeleton, weights: np.ndarray, dest: Path) -> None:
    """``weights``: (vertices, joints) skin weights; the four largest per vertex are kept."""
    if weights.shape != (len(mesh.vertices), len(skeleton.names)):
        raise ValueError(f"weights must be (vertices, joints) = ({len(mesh.vertices)}, {len(skeleton.names)})")
    b = _GlbBuilder()
    joints4, weights4 = top_weights(weights)
    prim = b.primitive(mesh, {"JOINTS_0": b.accessor(joints4, USHORT, ARRAY_BUFFER),
                              "WEIGHTS_0": b.accessor(weights4, FLOAT, ARRAY_BUFFER)})
    mesh_index = b.add_mesh("mesh", prim)
    first_joint = 1  # node 0 is the skinned mesh
    for j, (name, parent) in enumerate(zip(skeleton.names, skeleton.parents, strict=True)):
        local = skeleton.heads[j] - (skeleton.heads[parent] if parent >= 0 else 0)
        children = [first_joint + c for c, p in enumerate(skeleton.parents) if p == j]
        b.gltf.nodes.append(g.Node(name=name, translation=local.astype(float).tolist(), children=children or None))
    b.gltf.nodes.insert(0, g.Node(name="mesh", mesh=mesh_index, skin=0))
    # A joint's bind matrix places it at its head; the inverse takes the mesh into the joint's space.
    ibm = np.tile(np.eye(4, dtype=np.float32), (len(skeleton.names), 1, 1))
    ibm[:, :3, 3] = -skeleton.heads
    b.gltf.skins.append(g.Skin(joints=list(range(first_joint, first_joint + len(skeleton.names))),
                               skeleton=first_joint,
                               inverseBindMatrices=b.accessor(ibm.transpose(0, 2, 1).reshape(-1, 16), FLOAT, None)))
    b.save(dest, roots=[0, first_joint])


# -- segmented meshes --------------------------------------------------------------------------------------------

def write_segmented_glb(mesh: trimesh.Trimesh, face_labels: np.ndarray, dest: Path,
                        names: dict[int, str] | None = None) -> None:
    """One node per part, named, with ``extras.part_id``; the scene's extras list the parts."""
    face_labels = np.asarray(face_labels)
    if face_labels.shape != (len(mesh.faces),):
        raise ValueError("one label per face")
    b = _GlbBuilder()
    shared = b.material(mesh.visual)  # one material (and one texture) for all parts; submesh copies it per part
    parts = _parts(face_labels, names)
    roots = []
    for p in parts:
        part = mesh.submesh([np.flatnonzero(face_labels == p["part_id"])], append=True)
        mesh_index = b.add_mesh(p["name"], b.primitive(part, material=shared))
        roots.append(b.add_node(g.Node(name=p["name"], mesh=mesh_index, extras={"part_id": p["part_id"]})))
    b.save(dest, roots=roots, extras={"parts": parts})


def is_segmented(extras: dict) -> bool:
    """Whether a glTF scene's extras (trimesh's ``scene.metadata``) are those of write_segmented_glb. Other
    writers list parts too (the procedural model, by name), without part ids."""
    parts = extras.get("parts")
    return isinstance(parts, list) and bool(parts) and all(isinstance(p, dict) and "part_id" in p for p in parts)


def _parts(face_labels: np.ndarray, names: dict[int, str] | None,
           extras: dict[int, dict] | None = None) -> list[dict]:
    ids, counts = np.unique(np.asarray(face_labels).astype(int), return_counts=True)
    return [{"part_id": int(p), "name": (names or {}).get(int(p), f"part_{int(p)}"), "faces": int(n),
             **(extras or {}).get(int(p), {})} for p, n in zip(ids, counts, strict=True)]


def write_face_labels(face_labels: np.ndarray, dest: Path, names: dict[int, str] | None = None,
                      extras: dict[int, dict] | None = None) -> None:
    """The per-face labels, in the input mesh's face order, beside the segmented GLB. ``extras`` adds fields to
    a part's entry (which method made it, say)."""
    labels = np.asarray(face_labels).astype(int)
    dest.write_text(json.dumps({"face_labels": labels.tolist(), "parts": _parts(labels, names, extras)},
                               separators=(",", ":")))
