"""TEST STAND-IN for O-Voxel (package ``o_voxel``, o-voxel/ in github.com/microsoft/TRELLIS.2): computes nothing
real. Only ``o_voxel.postprocess.to_glb``, which pocket3d's TRELLIS.2 adapter calls."""

from o_voxel import postprocess

__all__ = ["postprocess"]
