"""The formats pocket3d writes results in, what each keeps of a result, and so the formats each feature can answer
in.

A feature's result is a mesh, and for segmentation also its parts (a node each), for rigging its skeleton and skin
weights: a format that drops those would hand back something other than what was asked for, so it is not offered
for that feature. The writers are pocket3d.geometry.formats, whose table must name exactly the formats here (it
checks when it loads); tests/test_output_formats.py writes a textured result in two parts in every format through
the export stage and reads back what each claims to keep and to drop (the skin: tests/test_gltf_writer.py).

A leaf module (no mesh library), so the API's request schemas, and the SDK through them, can list the formats.
"""

from __future__ import annotations

TEXTURE, PARTS, SKIN = "texture", "parts", "skin"

KEEPS: dict[str, frozenset[str]] = {
    "glb": frozenset({TEXTURE, PARTS, SKIN}),
    "obj": frozenset({TEXTURE, PARTS}),  # a zip of the OBJ (an object per part), its MTL and images
    "ply": frozenset(),  # one mesh, vertex colours (a texture is sampled into them)
    "stl": frozenset(),  # geometry only
    "json": frozenset(),  # one mesh, vertex colours
    "fbx": frozenset({TEXTURE, PARTS, SKIN}),  # written by Blender: armature, skin weights, embedded images
    "usdz": frozenset({TEXTURE, PARTS}),  # a prim per part; no UsdSkel
}

# What a feature's result holds beyond a textured mesh.
RESULT_HOLDS: dict[str, str] = {"segmentation": PARTS, "auto_rigging": SKIN}


def formats_for(feature: str) -> tuple[str, ...]:
    """The formats a result of ``feature`` can be written in without losing what the feature made."""
    needed = RESULT_HOLDS.get(feature)
    return tuple(name for name, keeps in KEEPS.items() if needed is None or needed in keeps)

