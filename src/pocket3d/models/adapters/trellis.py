"""TRELLIS (github.com/microsoft/TRELLIS): one image, several views of one object, or a prompt -> textured mesh.

The library's entry points, as this adapter calls them (paths in the upstream repository):

- ``trellis/pipelines/trellis_image_to_3d.py``: ``TrellisImageTo3DPipeline.from_pretrained(path)`` (a folder
  holding ``pipeline.json`` or a hub id, default ``microsoft/TRELLIS-image-large``), ``.to(device)``,
  ``.run(image, num_samples=1, seed=42, sparse_structure_sampler_params={}, slat_sampler_params={},
  formats=[...], preprocess_image=True)`` and ``.run_multi_image(images, ..., mode="stochastic"|"multidiffusion")``;
  both return ``{"gaussian": [Gaussian], "mesh": [MeshExtractResult], ...}``, one entry per sample.
- ``trellis/pipelines/trellis_text_to_3d.py``: ``TrellisTextTo3DPipeline`` (``microsoft/TRELLIS-text-xlarge``),
  ``.run(prompt, ...)`` with the same sampler parameters. Its CLIP text encoder reads at most 77 tokens.
- The sampler parameters are ``{"steps", "cfg_strength"}`` (``FlowEulerGuidanceIntervalSampler.sample`` in
  ``trellis/pipelines/samplers/flow_euler.py``), laid over the defaults in the weights' ``pipeline.json``.
  Stage 1 samples the sparse structure (which voxels are occupied), stage 2 the structured latent on them
  (``slat``), which is then decoded to 3D Gaussians and a mesh.
- ``trellis/utils/postprocessing_utils.py``: ``to_glb(app_rep, mesh, simplify=0.95, fill_holes=True,
  fill_holes_max_size=0.04, texture_size=1024, debug=False, verbose=True) -> trimesh.Trimesh``: simplifies the
  mesh (``simplify`` is the share of triangles removed), fills holes, unwraps UVs and bakes a base colour texture
  from renders of the Gaussians; the result is already Y-up.

What the library does itself, and what pocket3d adds:

- **Background.** ``preprocess_image`` uses the image's alpha channel when any pixel is transparent, else cuts
  the object out with ``rembg`` (``u2net``, downloaded on first use); it then crops to the object, scales it to
  518 px and blends it onto black. Registered with ``cutout: true``, the model gets pocket3d's RGBA cut-out and
  TRELLIS's own rembg never runs; a fully opaque image still works (TRELLIS cuts it out), and an image whose alpha
  leaves nothing opaque is refused (the library would fail on it with an index error).
- **DINOv2.** The image pipeline loads its conditioner with ``torch.hub.load("facebookresearch/dinov2", ...)``:
  from GitHub into torch's hub cache (``$TORCH_HOME/hub``), not from the Hugging Face hub. Offline
  (``HF_HUB_OFFLINE``) the model is listed unavailable until that cache holds the repository. (The text pipeline's
  CLIP encoder comes from the Hugging Face hub.)
- **Memory.** The demo (app.py) moves its results to the CPU between "Generate" and "Extract GLB" (``pack_state``)
  because the two are separate clicks. Here both happen in one call, so the results stay where ``to_glb`` needs
  them (on the device); only the two formats the GLB needs are decoded (``formats=["gaussian", "mesh"]``, as
  app.py asks: the radiance field is never built), the CUDA cache is emptied between generation and export as
  app.py does, and everything is dropped before ``run`` returns.
- **Environment.** ``ATTN_BACKEND`` (default ``flash_attn``; ``xformers`` on GPUs without flash-attention) and
  ``SPCONV_ALGO`` are read once, when ``trellis`` is first imported. The examples set ``SPCONV_ALGO=native``,
  "recommended if run only once": ``auto`` benchmarks at first and is faster afterwards, which suits a worker that
  keeps the model loaded, so the library's defaults stand unless models.yaml names ``options.attn_backend`` or
  ``options.spconv_algo``.
- **Progress.** The samplers take no callback. For the duration of one call each sampler's ``sample_once`` is
  wrapped (an attribute on the instance over the class's method, removed afterwards), so every step reports
  progress, and a cancelled job stops at its next step.
- **Material.** ``to_glb`` sets roughness 1 but no metallic factor, which glTF reads as fully metallic (a dark,
  mirror-like render); TRELLIS bakes base colour only, so the adapter writes metallic 0.

models.yaml options: ``weights`` (a folder or hub id), ``attn_backend``, ``spconv_algo``, ``presets``.

Quality presets set the sampling steps of both stages and the share of triangles ``to_glb`` removes; the texture
size is the request's ``texture_resolution``. Guidance strengths are sent only when the client sets them, so
otherwise the defaults of the weights' ``pipeline.json`` apply.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.adapters.base import WeightedModel, hub_offline, release_memory, rgba_image, write_glb
from pocket3d.models.spec import InputRejected, ModelSpec, ProgressFn, RunInputs

log = logging.getLogger(__name__)

DINOV2_HUB_REPO = "facebookresearch_dinov2"  # torch.hub's cache folder is <owner>_<repo>_<branch>
OPAQUE = 0.8 * 255  # preprocess_image crops to the pixels whose alpha is above this


# -- helpers the TRELLIS.2 adapters share ----------------------------------------------------------------------


def seed_for(inputs: RunInputs) -> int:
    """The request's seed, or a fresh one (reported in the progress message, so a result can be made again)."""
    return int(inputs.seed) if inputs.seed is not None else random.SystemRandom().randrange(2**31)


def sampler_params(steps: int | None, **named: float | None) -> dict[str, Any]:
    """A sampler-parameter dict holding only what was chosen: the rest stays at the pipeline.json defaults."""
    params: dict[str, Any] = {} if steps is None else {"steps": int(steps)}
    params.update({key: float(value) for key, value in named.items() if value is not None})
    return params


def set_import_environment(options: dict[str, Any], names: dict[str, str], module: str) -> None:
    """Set the environment variables a library reads when first imported, from the options that name them (option
    key -> variable). Once the library is imported in this worker, a change waits for a new worker process."""
    for key, variable in names.items():
        value = options.get(key)
        if value is None:
            continue
        if module in sys.modules and os.environ.get(variable) != str(value):
            log.warning("%s is already imported in this worker: %s=%s takes effect in a new worker process",
                        module, variable, value)
        os.environ[variable] = str(value)


def object_image(path: Path, what: str = "the image") -> Any:
    """The image as RGBA for a TRELLIS pipeline's own preprocessing: refused when its alpha hides the object."""
    import numpy as np
    from PIL import Image

    try:
        image = rgba_image(path)
    except (OSError, Image.DecompressionBombError) as e:
        raise InputRejected(f"{what} cannot be read: {e}") from None
    alpha = np.asarray(image.getchannel("A"))
    if (alpha < 255).any() and not (alpha > OPAQUE).any():
        raise InputRejected(f"{what} has no opaque object: its alpha channel is transparent (below 80%) everywhere")
    return image


@contextmanager
def sampler_progress(pipeline: Any, stages: list[tuple[str, str, int, int]], progress: ProgressFn,
                     start: float, end: float) -> Iterator[None]:
    """Report each sampling step of a TRELLIS pipeline between ``start`` and ``end``.

    ``stages`` lists ``(sampler attribute on the pipeline, what it samples, steps per pass, passes)``. The sampler's
    ``sample`` loop calls ``self.sample_once`` once per step (FlowEulerSampler in samplers/flow_euler.py), so a
    wrapper set on the instance sees every step; ``progress`` raising StageCancelled ends the loop there."""
    total = max(1, sum(steps * passes for _, _, steps, passes in stages))
    done = 0
    hooked: list[Any] = []

    def hook(sampler: Any, label: str, steps: int, passes: int) -> None:
        original = sampler.sample_once
        count = 0

        def sample_once(*args: Any, **kwargs: Any) -> Any:
            nonlocal done, count
            out = original(*args, **kwargs)
            done, count = done + 1, count + 1
            step = (count - 1) % max(1, steps) + 1
            where = f", pass {min(passes, (count - 1) // max(1, steps) + 1)}/{passes}" if passes > 1 else ""
            progress(start + (end - start) * min(done, total) / total, f"{label}{where}: step {step}/{steps}")
            return out

        sampler.sample_once = sample_once

    try:
        for attribute, label, steps, passes in stages:
            sampler = getattr(pipeline, attribute, None)
            if sampler is None or not hasattr(sampler, "sample_once") or "sample_once" in vars(sampler):
                continue
            hook(sampler, label, steps, passes)
            hooked.append(sampler)
        yield
    finally:
        for sampler in hooked:
            vars(sampler).pop("sample_once", None)


def steps_of(settings: dict[str, Any], key: str, pipeline: Any, defaults_attribute: str) -> int:
    """The steps a stage will take: the chosen ones, else its pipeline.json default (12 if that says nothing)."""
    if settings.get(key) is not None:
        return int(settings[key])
    defaults = getattr(pipeline, defaults_attribute, None) or {}
    return int(defaults.get("steps", 12))


# -- parameters ---------------------------------------------------------------------------------------------------


class TrellisParams(BaseModel):
    """The knobs of the official demo (app.py), under its names."""

    model_config = ConfigDict(extra="forbid")

    ss_sampling_steps: int | None = Field(None, ge=1, le=50, description="stage 1 (sparse structure) sampling "
                                          "steps; default from quality: low 8, medium 12, high 25")
    ss_guidance_strength: float | None = Field(None, ge=0, le=10, description="stage 1 classifier-free guidance "
                                               "(cfg_strength); default: the weights' pipeline.json (the demo "
                                               "uses 7.5)")
    slat_sampling_steps: int | None = Field(None, ge=1, le=50, description="stage 2 (structured latent) sampling "
                                            "steps; default from quality: low 8, medium 12, high 25")
    slat_guidance_strength: float | None = Field(None, ge=0, le=10, description="stage 2 classifier-free guidance "
                                                 "(cfg_strength); default: the weights' pipeline.json (the demo "
                                                 "uses 3.0)")
    mesh_simplify: float | None = Field(None, ge=0, le=0.99, description="share of the triangles removed when the "
                                        "GLB is made (to_glb's simplify); default from quality: low 0.97, medium "
                                        "0.95, high 0.9")


class TrellisImageParams(TrellisParams):
    multiimage_algo: Literal["stochastic", "multidiffusion"] | None = Field(
        None, description="with two or more views: how they condition the sampling (run_multi_image's mode): "
        "'stochastic' one view per step, 'multidiffusion' all views averaged each step; default stochastic")


PRESETS: dict[str, dict[str, Any]] = {
    "low": {"ss_sampling_steps": 8, "slat_sampling_steps": 8, "mesh_simplify": 0.97},
    "medium": {"ss_sampling_steps": 12, "slat_sampling_steps": 12, "mesh_simplify": 0.95},  # the demo's defaults
    "high": {"ss_sampling_steps": 25, "slat_sampling_steps": 25, "mesh_simplify": 0.9},
}


# -- adapters -----------------------------------------------------------------------------------------------------


class _TrellisModel(WeightedModel):
    requires: ClassVar[tuple[str, ...]] = ("torch", "trellis")
    weight_files: ClassVar[tuple[str, ...]] = ("pipeline.json",)
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    pipeline_class: ClassVar[str] = ""
    IMPORT_ENVIRONMENT: ClassVar[dict[str, str]] = {"attn_backend": "ATTN_BACKEND", "spconv_algo": "SPCONV_ALGO"}

    def build(self) -> Any:
        set_import_environment(self.spec.options, self.IMPORT_ENVIRONMENT, "trellis")
        import torch
        from trellis import pipelines

        # Imported now so that a missing CUDA extension (nvdiffrast, utils3d...) fails the load, not a finished run.
        from trellis.utils import postprocessing_utils  # noqa: F401

        pipeline = getattr(pipelines, self.pipeline_class).from_pretrained(self.weights)
        pipeline.to(torch.device(self.torch_device))
        return pipeline

    def _sample_and_export(self, pipeline: Any, run: Any, settings: dict[str, Any], inputs: RunInputs,
                           progress: ProgressFn) -> dict[str, Path]:
        """Run the pipeline (``run(**sampler arguments)``), then ``to_glb``, reporting both."""
        from trellis.utils import postprocessing_utils

        stages = [("sparse_structure_sampler", "sparse structure",
                   steps_of(settings, "ss_sampling_steps", pipeline, "sparse_structure_sampler_params"), 1),
                  ("slat_sampler", "structured latent",
                   steps_of(settings, "slat_sampling_steps", pipeline, "slat_sampler_params"), 1)]
        with sampler_progress(pipeline, stages, progress, 0.05, 0.8):
            outputs = run(
                sparse_structure_sampler_params=sampler_params(settings.get("ss_sampling_steps"),
                                                               cfg_strength=settings.get("ss_guidance_strength")),
                slat_sampler_params=sampler_params(settings.get("slat_sampling_steps"),
                                                   cfg_strength=settings.get("slat_guidance_strength")),
                formats=["gaussian", "mesh"])
        gaussians, meshes = outputs.get("gaussian") or [], outputs.get("mesh") or []
        if not gaussians or not meshes:
            raise RuntimeError("TRELLIS returned no Gaussians or no mesh")
        gaussian, mesh = gaussians[0], meshes[0]
        del outputs, gaussians, meshes
        release_memory()  # app.py empties the CUDA cache between generation and export too
        simplify = float(settings.get("mesh_simplify", 0.95))
        progress(0.82, f"making the GLB (to_glb: simplify {simplify}, fill holes, UV unwrap, "
                       f"{inputs.texture_resolution} px texture baked from the Gaussians)")
        # Not under torch.no_grad: to_glb bakes its texture by optimisation and needs autograd.
        glb = postprocessing_utils.to_glb(gaussian, mesh, simplify=simplify,
                                          texture_size=int(inputs.texture_resolution), verbose=False)
        del gaussian, mesh
        material = getattr(glb.visual, "material", None)
        if material is not None and getattr(material, "metallicFactor", None) is None:
            material.metallicFactor = 0.0  # glTF's default is 1: fully metallic; TRELLIS bakes base colour only
        progress(0.97, "writing the GLB")
        return {"mesh": write_glb(glb, inputs.work_dir)}


class TrellisImageModel(_TrellisModel):
    """TRELLIS image-large: one image, or two or more views of one object (``run_multi_image``), to a textured
    mesh."""

    Params = TrellisImageParams
    default_weights: ClassVar[str | None] = "microsoft/TRELLIS-image-large"
    pipeline_class: ClassVar[str] = "TrellisImageTo3DPipeline"

    @classmethod
    def unavailable_reasons(cls, spec: ModelSpec) -> list[str]:
        reasons = super().unavailable_reasons(spec)
        if hub_offline() and not any((torch_hub_dir() / f"{DINOV2_HUB_REPO}_{branch}").is_dir()
                                     for branch in ("main", "master")):
            reasons.append(f"TRELLIS loads DINOv2 with torch.hub from GitHub (facebookresearch/dinov2), and "
                           f"{torch_hub_dir()} does not hold it while HF_HUB_OFFLINE is set: load the model once "
                           "online, or copy that cache (TORCH_HOME) here")
        return reasons

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: TrellisImageParams) -> None:
        # A prompt may come along: pocket3d draws it as the image first (text_to_image) when asked for text.
        if images == 0:
            raise InputRejected("TRELLIS image-to-3D needs an image (or several views of one object)")
        if params.multiimage_algo is not None and images < 2:
            raise InputRejected("multiimage_algo applies to two or more views; one image was given")

    def run(self, inputs: RunInputs, params: TrellisImageParams, progress: ProgressFn) -> dict[str, Path]:
        self.check_request(images=len(inputs.images), text=inputs.text, params=params)
        settings = self.settings(params, inputs.quality)
        seed = seed_for(inputs)
        many = len(inputs.images) > 1
        progress(0.02, f"reading {len(inputs.images)} views" if many else "reading the image")
        images = [object_image(path, f"image {n}" if many else "the image")
                  for n, path in enumerate(inputs.images, 1)]
        with self.one_call() as pipeline:
            progress(0.04, f"seed {seed}")
            if many:
                mode = settings.get("multiimage_algo") or "stochastic"

                def run(**sampling: Any) -> dict:
                    return pipeline.run_multi_image(images, num_samples=1, seed=seed, preprocess_image=True,
                                                    mode=mode, **sampling)
            else:

                def run(**sampling: Any) -> dict:
                    return pipeline.run(images[0], num_samples=1, seed=seed, preprocess_image=True, **sampling)

            return self._sample_and_export(pipeline, run, settings, inputs, progress)


class TrellisTextModel(_TrellisModel):
    """TRELLIS text-xlarge: a prompt to a textured mesh (CUDA only: its text encoder is moved to ``cuda`` when the
    pipeline is built)."""

    Params = TrellisParams
    default_weights: ClassVar[str | None] = "microsoft/TRELLIS-text-xlarge"
    pipeline_class: ClassVar[str] = "TrellisTextTo3DPipeline"

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: TrellisParams) -> None:
        if not (text or "").strip():
            raise InputRejected("TRELLIS text-to-3D needs a text prompt")
        if images:
            raise InputRejected("TRELLIS text-to-3D takes no images")

    def run(self, inputs: RunInputs, params: TrellisParams, progress: ProgressFn) -> dict[str, Path]:
        self.check_request(images=len(inputs.images), text=inputs.text, params=params)
        prompt = (inputs.text or "").strip()
        settings = self.settings(params, inputs.quality)
        seed = seed_for(inputs)
        with self.one_call() as pipeline:
            progress(0.04, f"seed {seed}")

            def run(**sampling: Any) -> dict:
                return pipeline.run(prompt, num_samples=1, seed=seed, **sampling)

            return self._sample_and_export(pipeline, run, settings, inputs, progress)


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch (the gateway checks availability): $TORCH_HOME/hub, where
    TORCH_HOME defaults to $XDG_CACHE_HOME/torch, then ~/.cache/torch."""
    home = os.environ.get("TORCH_HOME")
    if not home:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
        home = os.path.join(cache, "torch")
    return Path(home).expanduser() / "hub"
