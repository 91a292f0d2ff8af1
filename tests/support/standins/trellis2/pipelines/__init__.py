"""TEST STAND-IN for TRELLIS.2's ``trellis2.pipelines`` (upstream trellis2/pipelines/__init__.py): computes
nothing real. The two pipeline classes, under their real names."""

from trellis2.pipelines.trellis2_image_to_3d import Trellis2ImageTo3DPipeline
from trellis2.pipelines.trellis2_texturing import Trellis2TexturingPipeline

__all__ = ["Trellis2ImageTo3DPipeline", "Trellis2TexturingPipeline"]
