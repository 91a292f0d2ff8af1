"""TEST STAND-IN for ``hy3dshape.postprocessors`` of Hunyuan3D-2.1 (``hy3dshape/hy3dshape/postprocessors.py``);
the real ones clean the mesh with pymeshlab. These record their calls (``hy3dshape.<Class>``) and hand the mesh
back, the face reducer reduced with trimesh's quadric decimation."""

from __future__ import annotations

from standin_calls import record


class FloaterRemover:
    def __call__(self, mesh):
        record("hy3dshape.FloaterRemover", faces=len(mesh.faces))
        return mesh


class DegenerateFaceRemover:
    def __call__(self, mesh):
        record("hy3dshape.DegenerateFaceRemover", faces=len(mesh.faces))
        return mesh


class FaceReducer:
    def __call__(self, mesh, max_facenum=40000):
        record("hy3dshape.FaceReducer", faces=len(mesh.faces), max_facenum=max_facenum)
        if len(mesh.faces) > max_facenum:
            mesh = mesh.simplify_quadric_decimation(face_count=max_facenum)
        return mesh
