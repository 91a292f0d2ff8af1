"""Run by the bpy environment's Python (TEST-ONLY): import an FBX and print what Blender finds, as JSON."""

import json
import sys

import bpy

path = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.fbx(filepath=path)
objects = list(bpy.data.objects)
print("READBACK " + json.dumps({
    "armatures": [{"name": o.name, "bones": [b.name for b in o.data.bones]} for o in objects if o.type == "ARMATURE"],
    "meshes": [{"name": o.name, "polygons": len(o.data.polygons), "vertex_groups": [g.name for g in o.vertex_groups],
                "images": len(bpy.data.images)} for o in objects if o.type == "MESH"],
}))
