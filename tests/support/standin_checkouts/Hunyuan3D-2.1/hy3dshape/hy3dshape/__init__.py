"""TEST STAND-IN for the ``hy3dshape`` package of Hunyuan3D-2.1 (``hy3dshape/hy3dshape/__init__.py`` in
Tencent-Hunyuan/Hunyuan3D-2.1); it computes nothing real. See ``pipelines.py`` and ``postprocessors.py``; only the
names pocket3d's adapter uses are exported."""

from .pipelines import Hunyuan3DDiTFlowMatchingPipeline
from .postprocessors import DegenerateFaceRemover, FaceReducer, FloaterRemover

__all__ = ["DegenerateFaceRemover", "FaceReducer", "FloaterRemover", "Hunyuan3DDiTFlowMatchingPipeline"]
