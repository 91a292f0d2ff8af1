"""SAM 3D Objects (github.com/facebookresearch/sam-3d-objects): one image and the mask of an object in it -> the
object's textured mesh (and, on request, its 3D Gaussian splat).

The library's entry points, as this adapter calls them (paths in the upstream repository):

- ``notebook/inference.py``: ``Inference(config_file, compile=False)`` loads the pipeline that
  ``<checkpoints>/pipeline.yaml`` describes (hydra-instantiated, its targets checked against a whitelist; the
  checkpoints are found next to that file). ``Inference.merge_mask_to_rgba(image, mask)`` puts a boolean mask into
  the image's alpha channel as 0/255. The class lives in the checkout's ``notebook`` folder, which is not part of
  the installed ``sam3d_objects`` package: ``options.source`` names the checkout and ``<source>/notebook`` goes on
  the path too. That module sets ``CUDA_HOME`` from ``CONDA_PREFIX`` when it is imported (a KeyError outside a
  conda environment), so the adapter sets ``CONDA_PREFIX`` first when it is missing (to ``CUDA_HOME`` if set, so
  that nothing changes, else to this Python's prefix, as conda would).
- ``Inference.__call__(image, mask, seed)`` is the documented call (README, demo.py), but it runs the pipeline with
  ``with_texture_baking=False, use_vertex_color=True``: its GLB has vertex colours only (MODEL-FACTS.md). So the
  adapter calls what ``__call__`` wraps, ``inference._pipeline.run(rgba, None, seed, ...)``
  (``sam3d_objects/pipeline/inference_pipeline_pointmap.py``), with the stage step counts
  (``stage1_inference_steps``, ``stage2_inference_steps``), and turns the decoded ``mesh`` and ``gaussian`` into a
  textured GLB itself with
- ``sam3d_objects/model/backbone/tdfy_dit/utils/postprocessing_utils.py``: ``to_glb(app_rep, mesh, simplify=0.95,
  fill_holes=True, fill_holes_max_size=0.04, texture_size=1024, debug=False, verbose=True,
  with_mesh_postprocess=True, with_texture_baking=True, use_vertex_color=False, rendering_engine="nvdiffrast")``:
  the mesh cleaned and simplified (``simplify`` is the share of triangles removed), UV-unwrapped, and a base
  colour texture baked from 100 renders of the Gaussians; rotated from Z-up to Y-up. The pipeline's own
  ``postprocess_slat_output`` calls the same function with fixed settings (95 %, 1024 px); the adapter lets it
  make its cheap vertex-colour GLB (no post-processing, no baking) and bakes its own at the request's
  ``texture_resolution`` and the preset's ``simplify``, with the pipeline's ``rendering_engine`` (``Inference``
  sets ``pytorch3d``).

What pocket3d adds:

- **The mask.** pocket3d's API takes images, not masks, so the model is registered with ``cutout: true``: a
  background-removal stage cuts the object out first (an upload that already is a cut-out passes as it is), and the
  mask is the cut-out's alpha (>= 50 %). The RGB under the whole image is kept: SAM 3D estimates a point map of the
  full scene and reads the object's context from it. An image whose alpha does not separate an object from a
  background is refused (INVALID_INPUT) rather than reconstructed as a rectangle.
- **Layout.** The pipeline also places the object in the camera's scene (rotation, translation, scale, and a layout
  post-optimisation against the point map). pocket3d returns the object on its own, so the post-optimisation is
  skipped (``with_layout_postprocess=False``); the mesh is in the object's own frame, Y-up.
- **Progress.** ``run`` takes no callback. For the duration of one call, the pipeline's stage methods
  (``compute_pointmap``, ``sample_sparse_structure``, ``sample_slat``, ``decode_slat``) are wrapped by attributes on
  the instance over the class's methods (removed afterwards), so each stage reports as it starts and a cancelled
  job stops at the next one.
- **Material.** ``to_glb`` sets roughness 1 and no metallic factor, which glTF reads as fully metallic; the texture
  is base colour only, so the adapter writes metallic 0.

Quality presets set the two stages' flow-matching steps (the pipeline's default is 25 each) and the share of
triangles removed. The model needs CUDA (the pipeline asks for the current CUDA device when it is built) and
>= 32 GB of it (setup.md).
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.adapters.base import (
    WeightedModel,
    has_alpha_cutout,
    is_local,
    only_image,
    paths_on_sys_path,
    release_memory,
    rgba_image,
    source_on_path,
    write_glb,
)
from pocket3d.models.spec import InputRejected, ModelSpec, ProgressFn, RunInputs

HUB_CHECKPOINTS = "checkpoints"  # the hub repository keeps pipeline.yaml and the weights in this folder
MASK_ALPHA = 128  # a pixel is the object's where the cut-out is at least half opaque
# The pipeline's stage methods, in the order run() calls them: (progress at its start, what it does).
STAGES: dict[str, tuple[float, str]] = {
    "compute_pointmap": (0.04, "estimating the scene's point map"),
    "sample_sparse_structure": (0.12, "sampling the sparse structure (stage 1)"),
    "sample_slat": (0.35, "sampling the structured latent (stage 2)"),
    "decode_slat": (0.58, "decoding the mesh and the Gaussians"),
}


class Sam3DObjectsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage1_inference_steps: int | None = Field(None, ge=1, le=100, description="flow-matching steps of stage 1 "
                                               "(sparse structure and layout); default from quality: 12/25/50")
    stage2_inference_steps: int | None = Field(None, ge=1, le=100, description="flow-matching steps of stage 2 "
                                               "(structured latent: shape and appearance); default 12/25/50")
    simplify: float | None = Field(None, ge=0, le=0.99, description="share of the triangles removed when the "
                                   "mesh is cleaned up (to_glb's simplify); default from quality: 0.97/0.95/0.9")
    gaussian_splat: bool = Field(False, description="also return the object's 3D Gaussian splat (splat.ply)")


class Sam3DObjectsModel(WeightedModel):
    """An image with an object cut out (its alpha is the mask) -> that object's textured mesh, by SAM 3D Objects."""

    Params = Sam3DObjectsParams
    requires: ClassVar[tuple[str, ...]] = ("torch", "sam3d_objects")
    default_weights: ClassVar[str | None] = "facebook/sam-3d-objects"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "low": {"stage1_inference_steps": 12, "stage2_inference_steps": 12, "simplify": 0.97},
        "medium": {"stage1_inference_steps": 25, "stage2_inference_steps": 25, "simplify": 0.95},
        "high": {"stage1_inference_steps": 50, "stage2_inference_steps": 50, "simplify": 0.9},
    }

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        for folder in _notebook_folders(spec):
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))

    @classmethod
    def required_files(cls, spec: ModelSpec) -> tuple[str, ...]:
        weights = str(spec.options.get("weights", cls.default_weights))
        return ("pipeline.yaml",) if is_local(weights) else (f"{HUB_CHECKPOINTS}/pipeline.yaml",)

    @classmethod
    def unavailable_reasons(cls, spec: ModelSpec) -> list[str]:
        reasons = super().unavailable_reasons(spec)
        with source_on_path(spec), paths_on_sys_path(*_notebook_folders(spec)):
            try:
                found = importlib.util.find_spec("inference") is not None
            except (ImportError, ValueError):
                found = False
        if not found:
            reasons.append("SAM 3D Objects' Inference class (notebook/inference.py in the sam-3d-objects checkout) "
                           "is not importable: set options.source to the checkout")
        return reasons

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: BaseModel) -> None:
        if images != 1:
            raise InputRejected(f"SAM 3D Objects takes exactly one image (the object cut out of it), got {images}")
        if text:
            raise InputRejected("SAM 3D Objects takes no text prompt")

    def build(self) -> Any:
        os.environ.setdefault("CONDA_PREFIX", os.environ.get("CUDA_HOME") or sys.prefix)
        from inference import Inference
        from sam3d_objects.model.backbone.tdfy_dit.utils import postprocessing_utils  # noqa: F401  (fail at load)

        return Inference(str(self._pipeline_yaml()), compile=bool(self.spec.options.get("compile", False)))

    def _pipeline_yaml(self) -> Path:
        if is_local(self.weights):
            return Path(self.weights) / "pipeline.yaml"
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self.weights)) / HUB_CHECKPOINTS / "pipeline.yaml"

    def run(self, inputs: RunInputs, params: Sam3DObjectsParams, progress: ProgressFn) -> dict[str, Path]:
        import numpy as np
        from sam3d_objects.model.backbone.tdfy_dit.utils import postprocessing_utils

        image = rgba_image(only_image(inputs, "SAM 3D Objects"))
        if not has_alpha_cutout(image):
            raise InputRejected("SAM 3D Objects reconstructs the object its mask selects, and this image's alpha "
                                "selects nothing (it is opaque, or clear, everywhere): send the object cut out of "
                                "the image (RGBA), or register the model with cutout: true")
        rgb = np.asarray(image)[..., :3]
        mask = np.asarray(image.getchannel("A")) >= MASK_ALPHA
        settings = self.settings(params, inputs.quality)
        seed = int(inputs.seed) if inputs.seed is not None else random.SystemRandom().randrange(2**31)
        progress(0.02, f"seed {seed}, the object covers {mask.mean():.0%} of the image")
        outputs: dict[str, Path] = {}
        with self.one_call() as inference:
            pipeline = inference._pipeline  # what Inference.__call__ wraps, with texture baking off
            with _stage_progress(pipeline, progress):
                result = pipeline.run(
                    inference.merge_mask_to_rgba(rgb, mask), None, seed,
                    stage1_only=False, with_mesh_postprocess=False, with_texture_baking=False,
                    with_layout_postprocess=False, use_vertex_color=True,
                    stage1_inference_steps=int(settings["stage1_inference_steps"]),
                    stage2_inference_steps=int(settings["stage2_inference_steps"]))
            gaussians, meshes = result.get("gaussian") or [], result.get("mesh") or []
            if not gaussians or not meshes:
                raise RuntimeError("SAM 3D Objects decoded no mesh or no Gaussians for this object")
            gaussian, mesh = gaussians[0], meshes[0]
            del result, gaussians, meshes
            release_memory()
            if settings.get("gaussian_splat"):
                splat = inputs.work_dir / "splat.ply"
                gaussian.save_ply(str(splat))
                outputs["splat"] = splat
            simplify = float(settings["simplify"])
            progress(0.65, f"cleaning the mesh (simplify {simplify}) and baking a {inputs.texture_resolution} px "
                           "texture from the Gaussians")
            # Not under torch.no_grad: to_glb bakes its texture by optimisation.
            glb = postprocessing_utils.to_glb(
                gaussian, mesh, simplify=simplify, texture_size=int(inputs.texture_resolution), verbose=False,
                with_mesh_postprocess=True, with_texture_baking=True, use_vertex_color=False,
                rendering_engine=getattr(pipeline, "rendering_engine", "pytorch3d"))
            del gaussian, mesh
        material = getattr(glb.visual, "material", None)
        if material is not None and getattr(material, "metallicFactor", None) is None:
            material.metallicFactor = 0.0  # glTF's default is 1, fully metallic; the baked texture is base colour
        progress(0.97, f"writing the GLB ({len(glb.faces)} faces)")
        outputs["mesh"] = write_glb(glb, inputs.work_dir)
        return outputs


def _notebook_folders(spec: ModelSpec) -> list[Path]:
    """``<checkout>/notebook`` of every source checkout that has ``notebook/inference.py``."""
    source = spec.options.get("source")
    paths = source if isinstance(source, list) else [source] if source else []
    folders = [Path(str(p)).expanduser() / "notebook" for p in paths]
    return [f for f in folders if (f / "inference.py").is_file()]


@contextmanager
def _stage_progress(pipeline: Any, progress: ProgressFn) -> Iterator[None]:
    """Report each stage of ``pipeline.run`` as it starts (see the module docstring)."""
    hooked: list[str] = []

    def hook(name: str, fraction: float, message: str) -> None:
        original = getattr(pipeline, name)

        def stage(*args: Any, **kwargs: Any) -> Any:
            progress(fraction, message)
            return original(*args, **kwargs)

        setattr(pipeline, name, stage)
        hooked.append(name)

    try:
        for name, (fraction, message) in STAGES.items():
            if callable(getattr(pipeline, name, None)) and name not in vars(pipeline):
                hook(name, fraction, message)
        yield
    finally:
        for name in hooked:
            vars(pipeline).pop(name, None)
