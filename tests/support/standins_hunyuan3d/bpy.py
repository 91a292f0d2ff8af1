"""TEST STAND-IN for ``bpy`` (Blender as a Python module); it computes nothing and defines nothing.

Hunyuan3D-2.1's ``hy3dpaint/DifferentiableRenderer/mesh_utils.py`` imports bpy at import time (for its OBJ to GLB
conversion, which pocket3d does not use), so pocket3d's 2.1 paint adapter lists the model as unavailable without
it. The textureGenPipeline stand-in never imports it; this empty module only lets that check pass.

Only the Hunyuan3D adapter tests put this folder on a server's PYTHONPATH. Such a server must not write FBX:
pocket3d's Blender subprocess inherits PYTHONPATH and would find this module instead of the real bpy.
"""
