"""TEST STAND-IN for SAM 3D Objects' notebook API (upstream notebook/inference.py in
github.com/facebookresearch/sam-3d-objects; the demo puts ``notebook`` on sys.path and imports ``inference``):
computes nothing real.

``Inference(config_file, compile=False)`` reads ``pipeline.yaml`` and builds the pipeline (upstream:
hydra-instantiated, ``rendering_engine`` forced to ``pytorch3d``, ``workspace_dir`` the file's folder) as
``self._pipeline``; ``merge_mask_to_rgba(image, mask)`` and ``__call__(image, mask, seed=None, pointmap=None)`` as
upstream (``__call__`` runs with texture baking off). Like upstream, importing it sets ``CUDA_HOME`` from
``CONDA_PREFIX`` (a KeyError when that is unset) and ``LIDRA_SKIP_INIT``. The construction is recorded
(``sam3d.Inference``).
"""

import os

os.environ["CUDA_HOME"] = os.environ["CONDA_PREFIX"]
os.environ["LIDRA_SKIP_INIT"] = "true"

import numpy as np
import yaml
from sam3d_objects.pipeline.inference_pipeline_pointmap import InferencePipelinePointMap
from standin_calls import record

__all__ = ["Inference"]


class Inference:
    def __init__(self, config_file: str, compile: bool = False):
        with open(config_file) as f:
            config = yaml.safe_load(f) or {}
        record("sam3d.Inference", config_file=config_file, compile=compile)
        config.pop("_target_", None)
        config["rendering_engine"] = "pytorch3d"
        config["compile_model"] = compile
        config["workspace_dir"] = os.path.dirname(config_file)
        self._pipeline = InferencePipelinePointMap(**config)

    def merge_mask_to_rgba(self, image, mask):
        mask = mask.astype(np.uint8) * 255
        mask = mask[..., None]
        return np.concatenate([image[..., :3], mask], axis=-1)

    def __call__(self, image, mask, seed=None, pointmap=None) -> dict:
        image = self.merge_mask_to_rgba(image, mask)
        return self._pipeline.run(image, None, seed, stage1_only=False, with_mesh_postprocess=False,
                                  with_texture_baking=False, with_layout_postprocess=True, use_vertex_color=True,
                                  stage1_inference_steps=None, pointmap=pointmap)
