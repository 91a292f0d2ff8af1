"""FBX. The only writer found whose FBX (armature, skin weights, embedded textures) reads back in Blender and
assimp is Blender's own, through the ``bpy`` package in a virtual environment of its own (it needs numpy < 2).
Until that environment is set up by the project, FBX is refused up front."""

UNAVAILABLE = "FBX export needs Blender's bpy environment, which is not set up yet"
