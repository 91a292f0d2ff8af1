"""Run by the Python of the bpy environment (never imported by pocket3d): converts between glTF and FBX, by the
files' suffixes, within an address-space limit in MB (set before bpy is imported, so all of Blender is under it).

    python -I _blender_fbx_script.py -- in.glb out.fbx 6144
    python -I _blender_fbx_script.py -- in.fbx out.glb 6144
"""

import resource
import sys

src, dst, memory_mb = sys.argv[sys.argv.index("--") + 1:]
limit = int(memory_mb) * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

import bpy  # noqa: E402

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
# FBX's own axis settings, as Maya, Unity and Unreal read them: Y up, +Z front (GlobalSettings UpAxis 1,
# FrontAxis 2). The glTF importer brought the Y-up file into Blender's Z-up frame; these turn it back.
bpy.ops.export_scene.fbx(filepath=dst, path_mode="COPY", embed_textures=True, add_leaf_bones=False,
                         object_types={"ARMATURE", "MESH", "EMPTY"}, axis_up="Y", axis_forward="-Z")
