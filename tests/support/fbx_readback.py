"""Run by the bpy environment's Python (TEST-ONLY): import an FBX and print what Blender finds, as JSON: armatures
and their bones (with their heads in Blender's Z-up world), meshes (polygons, vertex groups, world bounds), and the
axis settings the file itself declares (its GlobalSettings, read with Blender's own FBX parser)."""

import json
import sys

import bpy

path = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.fbx(filepath=path)
objects = list(bpy.data.objects)


def world_bounds(o):
    points = [o.matrix_world @ v.co for v in o.data.vertices]
    return [[min(p[i] for p in points) for i in range(3)], [max(p[i] for p in points) for i in range(3)]]


def declared_axes(fbx_path):
    """GlobalSettings' UpAxis/FrontAxis/CoordAxis (with signs) and UnitScaleFactor, as the file says them."""
    from io_scene_fbx import parse_fbx

    root, _version = parse_fbx.parse(fbx_path)
    settings = next(e for e in root.elems if e.id == b"GlobalSettings")
    props = next(e for e in settings.elems if e.id == b"Properties70")
    found = {}
    for p in props.elems:
        name = p.props[0].decode()
        if name in ("UpAxis", "UpAxisSign", "FrontAxis", "FrontAxisSign", "CoordAxis", "CoordAxisSign",
                    "UnitScaleFactor"):
            found[name] = p.props[4]
    return found


print("READBACK " + json.dumps({
    "armatures": [{"name": o.name, "bones": [b.name for b in o.data.bones],
                   "heads": {b.name: list(o.matrix_world @ b.head_local) for b in o.data.bones}}
                  for o in objects if o.type == "ARMATURE"],
    "meshes": [{"name": o.name, "polygons": len(o.data.polygons), "vertex_groups": [g.name for g in o.vertex_groups],
                "images": len(bpy.data.images), "bounds": world_bounds(o)} for o in objects if o.type == "MESH"],
    "axes": declared_axes(path),
}))
