"""Run by the Python of the bpy environment (never imported by pocket3d): converts between glTF and FBX, by the
files' suffixes.

    python -I _blender_fbx_script.py -- in.glb out.fbx
    python -I _blender_fbx_script.py -- in.fbx out.glb
"""

import sys

import bpy

src, dst = sys.argv[sys.argv.index("--") + 1:]
bpy.ops.wm.read_factory_settings(use_empty=True)
if src.lower().endswith(".fbx"):
    bpy.ops.import_scene.fbx(filepath=src)
    bpy.ops.export_scene.gltf(filepath=dst, export_format="GLB")
    sys.exit(0)
bpy.ops.import_scene.gltf(filepath=src)
# The glTF importer adds helpers (bone display shapes) in this collection; they are not part of the model.
helpers = bpy.data.collections.get("glTF_not_exported")
if helpers is not None:
    for obj in list(helpers.objects):
        bpy.data.objects.remove(obj, do_unlink=True)
bpy.ops.export_scene.fbx(filepath=dst, path_mode="COPY", embed_textures=True, add_leaf_bones=False,
                         object_types={"ARMATURE", "MESH", "EMPTY"})
