"""Small files made to hurt a server: each is the reproduction of a defect found by trying pocket3d as a hostile
or careless client would (issue 11). Made here, not stored, so each says how it is built."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import trimesh


def garbage_binary_fbx(seed: int = 2, size: int = 20_000) -> bytes:
    """A binary FBX header (version 7400) followed by random bytes: grew Blender to gigabytes in seconds."""
    r = random.Random(seed)
    return b"Kaydara FBX Binary  \x00\x1a\x00" + struct.pack("<I", 7400) + bytes(r.getrandbits(8) for _ in range(size))


def ascii_fbx() -> bytes:
    """About 100 bytes of ASCII FBX, which Blender does not read at all."""
    return b"; FBX 7.4.0 project file\nFBXHeaderExtension:  {\n\tFBXHeaderVersion: 1003\n}\nObjects:  {\n}\n"


def instanced_glb(faces: int = 20_000, nodes: int = 300) -> bytes:
    """One mesh of ``faces`` faces placed by ``nodes`` nodes: a small file, faces x nodes faces to a model."""
    sphere = trimesh.creation.icosphere(5)
    mesh = trimesh.Trimesh(sphere.vertices, sphere.faces[:faces], process=False)
    scene = trimesh.Scene()
    scene.add_geometry(mesh, geom_name="m", node_name="n0")
    for i in range(1, nodes):
        scene.graph.update(frame_to=f"n{i}", matrix=trimesh.transformations.translation_matrix([3.0 * i, 0, 0]),
                           geometry="m")
    return scene.export(file_type="glb")


def many_nodes_glb(nodes: int) -> bytes:
    """A chain of empty nodes above one box."""
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(), geom_name="b", node_name="c0")
    for i in range(1, nodes):
        scene.graph.update(frame_from=f"c{i - 1}", frame_to=f"c{i}", matrix=np.eye(4))
    return scene.export(file_type="glb")


def overflow_cube_obj(scale: float = 3e38) -> bytes:
    """A 12-face cube scaled near float32's largest value: finite, but it overflows in any arithmetic."""
    box = trimesh.creation.box()
    lines = [f"v {x * scale:.6e} {y * scale:.6e} {z * scale:.6e}" for x, y, z in box.vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in box.faces]
    return ("\n".join(lines) + "\n").encode()


def scaled_by_node_glb(scale: float = 1e30) -> bytes:
    """A unit cube whose node scales it far past any sane coordinate: the vertices alone look fine."""
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(), geom_name="b", node_name="n",
                       transform=np.diag([scale, scale, scale, 1.0]))
    return scene.export(file_type="glb")


def gltf_naming_another_file(uri: str = "../pocket3d.db") -> bytes:
    """A glTF whose buffer is another file on the server, by a relative path."""
    return json.dumps({"asset": {"version": "2.0"}, "buffers": [{"uri": uri, "byteLength": 36}],
                       "bufferViews": [{"buffer": 0, "byteLength": 36}],
                       "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                                      "min": [0, 0, 0], "max": [1, 1, 1]}],
                       "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
                       "nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}], "scene": 0}).encode()


def polygon_obj(sides: int = 5000) -> bytes:
    """One flat polygon with ``sides`` sides, as a single OBJ face (triangulated as a fan of slivers)."""
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    lines = [f"v {np.cos(a):.6f} {np.sin(a):.6f} 0" for a in angles]
    lines.append("f " + " ".join(str(i + 1) for i in range(sides)))
    return ("\n".join(lines) + "\n").encode()


def slivers_obj(length: int = 2000, width: float = 1e-6) -> bytes:
    """A strip ``length`` long and ``width`` wide cut into needle triangles (xatlas never finishes on it)."""
    k = length
    v = np.c_[np.r_[np.arange(k), np.arange(k)], np.r_[np.zeros(k), np.full(k, width)], np.zeros(2 * k)]
    f = [[i, i + 1, k + i] for i in range(k - 1)] + [[i + 1, k + i + 1, k + i] for i in range(k - 1)]
    lines = [f"v {a:.9g} {b:.9g} {c:.9g}" for a, b, c in v] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f]
    return ("\n".join(lines) + "\n").encode()


def single_triangle_obj() -> bytes:
    return b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"


def with_zero_area_faces_obj() -> bytes:
    """A box with three zero-area faces among its twelve."""
    box = trimesh.creation.box()
    faces = np.r_[box.faces, [[0, 0, 1], [2, 2, 2], [3, 4, 3]]]
    lines = [f"v {x} {y} {z}" for x, y, z in box.vertices] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return ("\n".join(lines) + "\n").encode()


def only_zero_area_faces_obj() -> bytes:
    return b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\nf 1 1 2\n"


def _triangle_gltf() -> dict:
    """One triangle, its buffer inline."""
    import base64

    data = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0)
    return {"asset": {"version": "2.0"},
            "buffers": [{"uri": "data:application/octet-stream;base64," + base64.b64encode(data).decode(),
                         "byteLength": len(data)}],
            "bufferViews": [{"buffer": 0, "byteLength": len(data)}],
            "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                           "min": [0, 0, 0], "max": [1, 1, 0]}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
            "nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}], "scene": 0}


def sparse_accessor_gltf(count: int = 500_000_000) -> bytes:
    """Half a kilobyte of glTF whose positions are a sparse accessor of ``count`` elements: trimesh allocated that
    many zeros (6 GB here) in the process reading the upload before it found anything wrong."""
    tree = _triangle_gltf()
    tree["accessors"][0] = {"componentType": 5126, "count": count, "type": "VEC3",
                            "sparse": {"count": 1, "indices": {"bufferView": 0, "componentType": 5125},
                                       "values": {"bufferView": 0}}}
    return json.dumps(tree).encode()


def primitives_gltf(nodes: int = 2000, primitives: int = 2000) -> bytes:
    """``nodes`` nodes placing one mesh of ``primitives`` primitives (the same triangle): trimesh makes a scene
    graph node of every primitive at every placement, four million here, from a file of 100 KB."""
    tree = _triangle_gltf()
    tree["meshes"] = [{"primitives": [{"attributes": {"POSITION": 0}} for _ in range(primitives)]}]
    tree["nodes"] = [{"mesh": 0, "translation": [2.0 * i, 0, 0]} for i in range(nodes)]
    tree["scenes"] = [{"nodes": list(range(nodes))}]
    return json.dumps(tree).encode()


def material_groups_obj(groups: int = 20_000) -> bytes:
    """One triangle drawn again under ``groups`` materials: trimesh names each material's mesh by searching the
    names before it (n² steps: 10,000 materials took 14 s of CPU in the server, 100,000 hours)."""
    return b"v 0 0 0\nv 1 0 0\nv 0 1 0\n" + b"".join(b"usemtl m%d\nf 1 2 3\n" % i for i in range(groups))


def textured_glb(side: int = 13_000) -> bytes:
    """A textured cube whose texture is ``side`` x ``side`` pixels of one colour (a 20 KB file at 13,000): whatever
    reads its colours decodes it whole (rigging it grew the server's workers by 6 GB and took 50 s)."""
    import io

    from PIL import Image

    texture = io.BytesIO()
    Image.new("1", (side, side)).save(texture, "PNG")
    placeholder = Image.new("RGB", (2, 2))
    box = trimesh.creation.box()
    uv = np.random.default_rng(0).random((len(box.vertices), 2))
    box.visual = trimesh.visual.TextureVisuals(uv=uv, material=trimesh.visual.material.PBRMaterial(
        baseColorTexture=placeholder))
    glb = box.export(file_type="glb")
    # Put the large PNG where the placeholder's bytes were (trimesh would re-encode a PIL image it was given).
    json_length = struct.unpack_from("<I", glb, 12)[0]
    tree = json.loads(glb[20:20 + json_length])
    binary = glb[20 + json_length + 8:]
    view = tree["bufferViews"][tree["images"][0]["bufferView"]]
    start, length = view.get("byteOffset", 0), view["byteLength"]
    png = texture.getvalue()
    binary = binary[:start] + png + binary[start + length:]
    for other in tree["bufferViews"]:
        if other.get("byteOffset", 0) > start:
            other["byteOffset"] += len(png) - length
    view["byteLength"] = len(png)
    binary += b"\0" * (-len(binary) % 4)
    tree["buffers"][0]["byteLength"] = len(binary)
    text = json.dumps(tree).encode()
    text += b" " * (-len(text) % 4)
    return (struct.pack("<4sII", b"glTF", 2, 28 + len(text) + len(binary)) + struct.pack("<I4s", len(text), b"JSON")
            + text + struct.pack("<I4s", len(binary), b"BIN\0") + binary)
