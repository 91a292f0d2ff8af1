"""TEST STAND-IN for SAM 3D Objects' pipeline (upstream sam3d_objects/pipeline/inference_pipeline_pointmap.py
``InferencePipelinePointMap``, on inference_pipeline.py ``InferencePipeline``): computes nothing real.

``run(image, mask=None, seed=None, stage1_only=False, with_mesh_postprocess=True, with_texture_baking=True,
with_layout_postprocess=True, use_vertex_color=False, stage1_inference_steps=None, stage2_inference_steps=None,
use_stage1_distillation=False, use_stage2_distillation=False, pointmap=None, decode_formats=None,
estimate_plane=False) -> dict`` calls the stage methods upstream calls, in its order (``merge_image_and_mask``,
``compute_pointmap``, ``sample_sparse_structure``, ``sample_slat``, ``decode_slat``, ``postprocess_slat_output``,
which calls ``to_glb`` with upstream's fixed settings), and returns upstream's keys: the pose (``rotation``,
``translation``, ``scale``), ``mesh`` and ``gaussian`` (lists of one), ``glb``, ``gs``, ``pointmap``.

Nothing is sampled: the "object" is an ellipsoid as wide and tall as the mask's bounding box, coloured with the
masked pixels' mean colour. The call is recorded (``sam3d.pipeline.run``) with the mask's pixel count; seed
``FAIL_SEED`` makes it fail, as a model does (the tests of the error path use it).
"""

from __future__ import annotations

import numpy as np
import torch
from standin_calls import record

from sam3d_objects.model.backbone.tdfy_dit.representations import (
    Gaussian,
    MeshExtractResult,
)
from sam3d_objects.model.backbone.tdfy_dit.utils import postprocessing_utils

FAIL_SEED = 4040


class InferencePipelinePointMap:
    def __init__(self, rendering_engine: str = "nvdiffrast", compile_model: bool = False, workspace_dir: str = "",
                 device: str = "cuda", ss_inference_steps: int = 25, slat_inference_steps: int = 25, **_: object):
        self.rendering_engine, self.compile_model, self.workspace_dir = rendering_engine, compile_model, workspace_dir
        self.device = torch.device("cpu")  # upstream: torch.device(device), "cuda" in the released pipeline.yaml
        self.ss_inference_steps, self.slat_inference_steps = ss_inference_steps, slat_inference_steps
        self.decode_formats = ["gaussian", "mesh"]

    def merge_image_and_mask(self, image, mask):
        if mask is not None:
            image, mask = np.array(image), np.array(mask)
            if mask.ndim == 2:
                mask = mask[..., None]
            assert mask.shape[:2] == image.shape[:2]
            image = np.concatenate([image[..., :3], mask], axis=-1)
        return np.array(image)

    def compute_pointmap(self, image, pointmap=None) -> dict:
        h, w = image.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        points = torch.tensor(np.stack([xs / w - 0.5, ys / h - 0.5, np.ones_like(xs)]))
        return {"pointmap": points, "pts_color": torch.tensor(image[..., :3]).permute(2, 0, 1),
                "intrinsics": torch.eye(3)}

    def sample_sparse_structure(self, ss_input_dict: dict, inference_steps=None, use_distillation=False) -> dict:
        alpha = ss_input_dict["image"][..., 3] > 0
        ys, xs = np.nonzero(alpha)
        extent = np.array([np.ptp(xs) + 1, np.ptp(ys) + 1], dtype=float) / max(alpha.shape)
        return {"coords": torch.zeros((8, 4), dtype=torch.int32), "extent": extent,
                "rotation": torch.tensor([[1.0, 0.0, 0.0, 0.0]]), "translation": torch.zeros((1, 3)),
                "scale": torch.ones((1, 3)), "downsample_factor": 1.0}

    def sample_slat(self, slat_input_dict: dict, coords, inference_steps=None, use_distillation=False) -> dict:
        image = slat_input_dict["image"]
        mask = image[..., 3] > 0
        return {"colour": image[..., :3][mask].mean(axis=0) / 255.0, "extent": slat_input_dict["extent"]}

    def decode_slat(self, slat: dict, formats=("mesh", "gaussian")) -> dict:
        width, height = slat["extent"]
        radii = 0.5 * np.array([width, 0.5 * width, height]) / max(width, height)  # Z-up, upstream's frame
        return {"mesh": [MeshExtractResult.ellipsoid(radii, slat["colour"])],
                "gaussian": [Gaussian.around(radii, slat["colour"])]}

    def postprocess_slat_output(self, outputs, with_mesh_postprocess, with_texture_baking, use_vertex_color):
        outputs["glb"] = postprocessing_utils.to_glb(
            outputs["gaussian"][0], outputs["mesh"][0], simplify=0.95, texture_size=1024, verbose=False,
            with_mesh_postprocess=with_mesh_postprocess, with_texture_baking=with_texture_baking,
            use_vertex_color=use_vertex_color, rendering_engine=self.rendering_engine)
        outputs["gs"] = outputs["gaussian"][0]
        return outputs

    def run(self, image, mask=None, seed=None, stage1_only=False, with_mesh_postprocess=True,
            with_texture_baking=True, with_layout_postprocess=True, use_vertex_color=False,
            stage1_inference_steps=None, stage2_inference_steps=None, use_stage1_distillation=False,
            use_stage2_distillation=False, pointmap=None, decode_formats=None, estimate_plane=False) -> dict:
        image = self.merge_image_and_mask(image, mask)
        alpha = image[..., 3] if image.shape[-1] == 4 else None
        record("sam3d.pipeline.run", seed=seed, stage1_only=stage1_only, with_mesh_postprocess=with_mesh_postprocess,
               with_texture_baking=with_texture_baking, with_layout_postprocess=with_layout_postprocess,
               use_vertex_color=use_vertex_color, stage1_inference_steps=stage1_inference_steps,
               stage2_inference_steps=stage2_inference_steps, image_shape=list(image.shape),
               mask_pixels=None if alpha is None else int((alpha > 0).sum()),
               alpha_values=None if alpha is None else sorted(int(v) for v in np.unique(alpha)))
        if seed == FAIL_SEED:
            raise RuntimeError(f"the SAM 3D stand-in fails on seed {FAIL_SEED}, as asked")
        with self.device:
            pointmap_dict = self.compute_pointmap(image, pointmap)
            if seed is not None:
                torch.manual_seed(seed)
            ss_return_dict = self.sample_sparse_structure({"image": image, "pointmap": pointmap_dict["pointmap"]},
                                                          inference_steps=stage1_inference_steps)
            if stage1_only:
                return ss_return_dict
            slat = self.sample_slat({"image": image, "extent": ss_return_dict.pop("extent")},
                                    ss_return_dict["coords"], inference_steps=stage2_inference_steps)
            outputs = self.decode_slat(slat, self.decode_formats if decode_formats is None else decode_formats)
            outputs = self.postprocess_slat_output(outputs, with_mesh_postprocess, with_texture_baking,
                                                   use_vertex_color)
            return {**ss_return_dict, **outputs, "pointmap": pointmap_dict["pointmap"].permute(1, 2, 0),
                    "pointmap_colors": pointmap_dict["pts_color"].permute(1, 2, 0)}
