"""TRELLIS.2 (github.com/microsoft/TRELLIS.2): an image -> a mesh with PBR materials, and PBR textures for a given
mesh from a reference image.

The library's entry points, as these adapters call them (paths in the upstream repository):

- ``trellis2/pipelines/trellis2_image_to_3d.py``: ``Trellis2ImageTo3DPipeline.from_pretrained(path,
  config_file="pipeline.json")`` (default ``microsoft/TRELLIS.2-4B``), ``.to(device)`` and ``.run(image,
  num_samples=1, seed=42, sparse_structure_sampler_params={}, shape_slat_sampler_params={},
  tex_slat_sampler_params={}, preprocess_image=True, return_latent=False, pipeline_type=None,
  max_num_tokens=49152) -> list[MeshWithVoxel]``. ``pipeline_type`` is ``"512"``, ``"1024"``,
  ``"1024_cascade"`` or ``"1536_cascade"``; the demo (app.py) maps its resolution choice 512 / 1024 / 1536 to
  ``"512"`` / ``"1024_cascade"`` / ``"1536_cascade"``, and so does this adapter. A cascade samples the shape twice
  (at 512, then at the full resolution), and lowers the second pass's resolution in steps of 128 while its voxels
  exceed ``max_num_tokens``.
- Sampler parameters (``samplers/flow_euler.py`` with ``classifier_free_guidance_mixin.py``): ``steps``,
  ``guidance_strength`` (1 = no guidance: prediction = g * conditional + (1 - g) * unconditional),
  ``guidance_rescale`` and ``rescale_t``, laid over the defaults in the weights' ``pipeline.json``. Three stages:
  sparse structure, shape latent, texture (material) latent.
- ``o-voxel/o_voxel/postprocess.py``: ``to_glb(vertices, faces, attr_volume, coords, attr_layout, aabb,
  voxel_size=None, grid_size=None, decimation_target=1000000, texture_size=2048, remesh=False, remesh_band=1,
  remesh_project=0.9, ..., verbose=False, use_tqdm=False) -> trimesh.Trimesh``: cleans and optionally remeshes the
  mesh, decimates it, unwraps UVs and bakes base colour + alpha and metallic-roughness textures from the voxels;
  Y-up. The arguments are example.py's: the mesh's own ``attrs``, ``coords``, ``layout`` and ``voxel_size``, the
  unit cube as ``aabb``, ``remesh=True, remesh_band=1, remesh_project=0``.
- ``trellis2/pipelines/trellis2_texturing.py``: ``Trellis2TexturingPipeline.from_pretrained(path,
  config_file="texturing_pipeline.json")``, ``.run(mesh: trimesh.Trimesh, image, seed=42,
  tex_slat_sampler_params={}, preprocess_image=True, resolution=1024, texture_size=2048) -> trimesh.Trimesh``.
  It centres the mesh and scales it into the unit cube (Y-up in, Y-up out), keeps the mesh's UVs when it has
  any (else unwraps with cumesh), and returns the mesh with PBR textures in that unit frame.

What the library does itself, and what pocket3d adds:

- **Background.** Both pipelines' ``preprocess_image`` use the alpha channel when any pixel is transparent, else
  cut the object out with BiRefNet; then crop to the object and blend it onto black. Registered with
  ``cutout: true``, they get pocket3d's RGBA cut-out; an image whose alpha leaves nothing opaque is refused.
- **Allocator.** The examples set ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` ("can save GPU memory") as
  their first line, because PyTorch reads it once, when its CUDA allocator starts. In pocket3d a GPU's models
  share one worker process, and CUDA starts there with the first model that touches it. So ``build`` (the first
  code of this adapter that runs in the worker) adds ``expandable_segments:True`` to the variable before it
  imports ``trellis2`` or uses CUDA; if another model in this worker has already started CUDA, the variable is
  too late and the adapter switches the setting on through PyTorch's allocator-settings call instead (it applies
  to memory reserved from then on). A variable the operator set that already names ``expandable_segments`` is
  left alone; ``options.expandable_segments: false`` turns this off. The setting stays for the worker process and
  the other models in it (it only changes how the allocator reserves memory).
- **Memory.** The README asks for 24 GB; with the demo's defaults peaks above 63 GB are reported (MODEL-FACTS.md).
  The pipelines' ``low_vram`` mode (from pipeline.json, on by default) keeps each network on the CPU until its
  stage; ``options.low_vram`` overrides it. The GLB export is the slow part (issue #18; the official demo raised
  its time limit for it) and reports no progress of its own, so the stage says so before it starts. The CUDA cache
  is emptied between sampling and export.
- **Weights.** Besides the folder or hub id named, the pipelines load their image conditioner (DINOv3, through
  transformers) and BiRefNet from the Hugging Face hub, and a pipeline.json may name checkpoints in other hub
  repositories (copies of TRELLIS.2-4B's name TRELLIS-image-large's sparse-structure decoder): an offline node
  needs those in its cache too.
- **Progress** per sampling step, as in the TRELLIS adapter (each sampler's ``sample_once`` wrapped for the call).
- **Attention.** ``ATTN_BACKEND`` (default ``flash_attn``; ``xformers`` on GPUs without flash-attention) is read
  when ``trellis2`` is first imported: set it with ``options.attn_backend``.

models.yaml options: ``weights`` (a folder or hub id), ``expandable_segments`` (default true), ``low_vram``,
``attn_backend``, ``presets``.

Quality presets: low = 512³, 8 steps per stage, 200k-face GLB; medium = 1024³ (cascade), 12 steps (the demo's),
500k faces (the demo's); high = 1536³ (cascade), 16 steps, 1M faces (example.py's). The texture size is the
request's ``texture_resolution``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.adapters.base import WeightedModel, release_memory, write_glb
from pocket3d.models.adapters.trellis import (
    object_image,
    sampler_params,
    sampler_progress,
    seed_for,
    set_import_environment,
    steps_of,
)
from pocket3d.models.spec import InputRejected, ProgressFn, RunInputs

log = logging.getLogger(__name__)

PIPELINE_TYPES = {512: "512", 1024: "1024_cascade", 1536: "1536_cascade"}  # app.py's mapping
UNIT_CUBE = [[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]]
EXPANDABLE = "expandable_segments:True"
Resolution = Literal[512, 1024, 1536]


def enable_expandable_segments(environ: Any = os.environ) -> str:
    """Turn on PyTorch's expandable segments for this worker process (see the module's docstring). Returns what
    was done: "kept" (the operator's variable names the setting), "variable" (set before CUDA started) or
    "runtime" (CUDA had started: switched through the allocator-settings call)."""
    for name in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"):
        if "expandable_segments" in environ.get(name, ""):
            return "kept"
    # PyTorch >= 2.9 reads PYTORCH_ALLOC_CONF first; older ones only PYTORCH_CUDA_ALLOC_CONF.
    name = "PYTORCH_ALLOC_CONF" if environ.get("PYTORCH_ALLOC_CONF") else "PYTORCH_CUDA_ALLOC_CONF"
    environ[name] = f"{environ[name]},{EXPANDABLE}" if environ.get(name) else EXPANDABLE
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return "variable"
    setter = getattr(torch._C, "_accelerator_setAllocatorSettings", None)  # PyTorch >= 2.9
    if setter is None:
        setter = torch.cuda.memory._set_allocator_settings
    setter(EXPANDABLE)
    return "runtime"


# -- parameters ---------------------------------------------------------------------------------------------------


class _TexSlatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: Resolution | None = Field(None, description="voxel resolution: 512, 1024 or 1536; default from "
                                          "quality: low 512, medium 1024, high 1536")
    tex_slat_sampling_steps: int | None = Field(None, ge=1, le=50, description="texture (material) stage sampling "
                                                "steps; default from quality: low 8, medium 12, high 16")
    tex_slat_guidance_strength: float | None = Field(None, ge=1, le=10, description="texture stage guidance "
                                                     "strength (1 = none); default: pipeline.json (the demo uses "
                                                     "1.0)")
    tex_slat_guidance_rescale: float | None = Field(None, ge=0, le=1, description="texture stage guidance rescale; "
                                                    "default: pipeline.json (the demo uses 0.0)")
    tex_slat_rescale_t: float | None = Field(None, ge=1, le=6, description="texture stage timestep rescale; "
                                             "default: pipeline.json (the demo uses 3.0)")


class Trellis2Params(_TexSlatParams):
    """The knobs of the official demo (app.py), under its names."""

    ss_sampling_steps: int | None = Field(None, ge=1, le=50, description="sparse structure stage sampling steps; "
                                          "default from quality: low 8, medium 12, high 16")
    ss_guidance_strength: float | None = Field(None, ge=1, le=10, description="sparse structure guidance strength "
                                               "(1 = none); default: pipeline.json (the demo uses 7.5)")
    ss_guidance_rescale: float | None = Field(None, ge=0, le=1, description="sparse structure guidance rescale; "
                                              "default: pipeline.json (the demo uses 0.7)")
    ss_rescale_t: float | None = Field(None, ge=1, le=6, description="sparse structure timestep rescale; default: "
                                       "pipeline.json (the demo uses 5.0)")
    shape_slat_sampling_steps: int | None = Field(None, ge=1, le=50, description="shape stage sampling steps (per "
                                                  "pass of a cascade); default from quality: low 8, medium 12, "
                                                  "high 16")
    shape_slat_guidance_strength: float | None = Field(None, ge=1, le=10, description="shape stage guidance "
                                                       "strength (1 = none); default: pipeline.json (the demo uses "
                                                       "7.5)")
    shape_slat_guidance_rescale: float | None = Field(None, ge=0, le=1, description="shape stage guidance "
                                                      "rescale; default: pipeline.json (the demo uses 0.5)")
    shape_slat_rescale_t: float | None = Field(None, ge=1, le=6, description="shape stage timestep rescale; "
                                               "default: pipeline.json (the demo uses 3.0)")
    max_num_tokens: int | None = Field(None, ge=1024, le=1_048_576, description="cascade: the full-resolution pass "
                                       "lowers its resolution in steps of 128 until its voxels fit this many tokens "
                                       "(bounds memory); default 49152")
    decimation_target: int | None = Field(None, ge=100_000, le=2_000_000, description="faces of the exported mesh "
                                          "(o_voxel to_glb); default from quality: low 200000, medium 500000, high "
                                          "1000000; for fewer, use the request's target_faces")
    remesh: bool | None = Field(None, description="rebuild the surface before decimation (to_glb's remesh, on in "
                                "the examples); off keeps the raw surface with its inner structures")


class Trellis2TexturingParams(_TexSlatParams):
    """The model expects the mesh Y-up, as pocket3d hands every mesh to a model (parameters.up_axis says how the
    input stands, when its shape does not tell)."""


PRESETS: dict[str, dict[str, Any]] = {
    "low": {"resolution": 512, "ss_sampling_steps": 8, "shape_slat_sampling_steps": 8,
            "tex_slat_sampling_steps": 8, "decimation_target": 200_000},
    "medium": {"resolution": 1024, "ss_sampling_steps": 12, "shape_slat_sampling_steps": 12,
               "tex_slat_sampling_steps": 12, "decimation_target": 500_000},
    "high": {"resolution": 1536, "ss_sampling_steps": 16, "shape_slat_sampling_steps": 16,
             "tex_slat_sampling_steps": 16, "decimation_target": 1_000_000},
}
TEXTURING_PRESETS: dict[str, dict[str, Any]] = {
    quality: {"resolution": p["resolution"], "tex_slat_sampling_steps": p["tex_slat_sampling_steps"]}
    for quality, p in PRESETS.items()
}


def _stage_params(settings: dict[str, Any], prefix: str) -> dict[str, Any]:
    return sampler_params(settings.get(f"{prefix}_sampling_steps"),
                          guidance_strength=settings.get(f"{prefix}_guidance_strength"),
                          guidance_rescale=settings.get(f"{prefix}_guidance_rescale"),
                          rescale_t=settings.get(f"{prefix}_rescale_t"))


# -- adapters -----------------------------------------------------------------------------------------------------


class _Trellis2Model(WeightedModel):
    # o_voxel: TRELLIS.2's companion package (o-voxel/ in its repository); the texturing pipeline imports it too.
    requires: ClassVar[tuple[str, ...]] = ("torch", "trellis2", "o_voxel")
    default_weights: ClassVar[str | None] = "microsoft/TRELLIS.2-4B"
    pipeline_class: ClassVar[str] = ""
    config_file: ClassVar[str] = "pipeline.json"

    def build(self) -> Any:
        if self.torch_device.startswith("cuda") and self.spec.options.get("expandable_segments", True):
            how = enable_expandable_segments()
            log.info("%s: PyTorch expandable segments %s", self.spec.id,
                     {"kept": "already configured", "variable": "set before CUDA started",
                      "runtime": "switched on at run time (CUDA had started)"}[how])
        set_import_environment(self.spec.options, {"attn_backend": "ATTN_BACKEND"}, "trellis2")
        # o_voxel's export is imported now, so that a missing CUDA extension (cumesh, flex_gemm, nvdiffrast) fails
        # the load rather than a finished run.
        import o_voxel.postprocess  # noqa: F401
        import torch
        from trellis2 import pipelines

        pipeline = getattr(pipelines, self.pipeline_class).from_pretrained(self.weights,
                                                                           config_file=self.config_file)
        if "low_vram" in self.spec.options:
            pipeline.low_vram = bool(self.spec.options["low_vram"])
        pipeline.to(torch.device(self.torch_device))
        return pipeline


class Trellis2ImageModel(_Trellis2Model):
    """TRELLIS.2-4B: one image to a mesh with PBR materials (base colour, metallic, roughness, alpha)."""

    Params = Trellis2Params
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    weight_files: ClassVar[tuple[str, ...]] = ("pipeline.json",)
    pipeline_class: ClassVar[str] = "Trellis2ImageTo3DPipeline"

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: Trellis2Params) -> None:
        # A prompt may come along: pocket3d draws it as the image first (text_to_image) when asked for text.
        if images != 1:
            raise InputRejected(f"TRELLIS.2 takes exactly one image, got {images}")

    def run(self, inputs: RunInputs, params: Trellis2Params, progress: ProgressFn) -> dict[str, Path]:
        import o_voxel.postprocess

        self.check_request(images=len(inputs.images), text=inputs.text, params=params)
        settings = self.settings(params, inputs.quality)
        resolution = int(settings.get("resolution") or 1024)
        seed = seed_for(inputs)
        progress(0.02, "reading the image")
        image = object_image(inputs.images[0])
        with self.one_call() as pipeline:
            progress(0.04, f"seed {seed}, {resolution}³")
            stages = [("sparse_structure_sampler", "sparse structure",
                       steps_of(settings, "ss_sampling_steps", pipeline, "sparse_structure_sampler_params"), 1),
                      ("shape_slat_sampler", "shape",
                       steps_of(settings, "shape_slat_sampling_steps", pipeline, "shape_slat_sampler_params"),
                       1 if resolution == 512 else 2),
                      ("tex_slat_sampler", "material",
                       steps_of(settings, "tex_slat_sampling_steps", pipeline, "tex_slat_sampler_params"), 1)]
            extra = {} if settings.get("max_num_tokens") is None else {"max_num_tokens": settings["max_num_tokens"]}
            with sampler_progress(pipeline, stages, progress, 0.05, 0.75):
                meshes = pipeline.run(image, num_samples=1, seed=seed,
                                      sparse_structure_sampler_params=_stage_params(settings, "ss"),
                                      shape_slat_sampler_params=_stage_params(settings, "shape_slat"),
                                      tex_slat_sampler_params=_stage_params(settings, "tex_slat"),
                                      preprocess_image=True, pipeline_type=PIPELINE_TYPES[resolution], **extra)
            if not meshes:
                raise RuntimeError("TRELLIS.2 returned no mesh")
            mesh = meshes[0]
            del meshes
            release_memory()
            target, remesh = int(settings.get("decimation_target", 500_000)), bool(settings.get("remesh", True))
            progress(0.78, f"exporting the GLB (o_voxel to_glb: {'remesh, ' if remesh else ''}decimate to {target} "
                           f"faces, UV unwrap, {inputs.texture_resolution} px PBR textures; the slow part at high "
                           "resolutions)")
            glb = o_voxel.postprocess.to_glb(
                vertices=mesh.vertices, faces=mesh.faces, attr_volume=mesh.attrs, coords=mesh.coords,
                attr_layout=mesh.layout, voxel_size=mesh.voxel_size, aabb=UNIT_CUBE, decimation_target=target,
                texture_size=int(inputs.texture_resolution), remesh=remesh, remesh_band=1, remesh_project=0,
                verbose=False)
            del mesh
        progress(0.97, "writing the GLB")
        return {"mesh": write_glb(glb, inputs.work_dir)}


class Trellis2TexturingModel(_Trellis2Model):
    """TRELLIS.2-4B texturing: PBR textures for a given mesh from one reference image. The mesh keeps its shape,
    place and size; its UVs are kept when usable, else the pipeline unwraps it."""

    Params = Trellis2TexturingParams
    presets: ClassVar[dict[str, dict[str, Any]]] = TEXTURING_PRESETS
    weight_files: ClassVar[tuple[str, ...]] = ("texturing_pipeline.json",)
    pipeline_class: ClassVar[str] = "Trellis2TexturingPipeline"
    config_file: ClassVar[str] = "texturing_pipeline.json"

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: Trellis2TexturingParams) -> None:
        # A prompt may come along: drawn as the reference image first (text_to_image) when the registry can.
        if images != 1:
            raise InputRejected(f"TRELLIS.2 texturing takes exactly one reference image, got {images}")

    def run(self, inputs: RunInputs, params: Trellis2TexturingParams, progress: ProgressFn) -> dict[str, Path]:
        import numpy as np
        import trimesh

        from pocket3d.geometry.meshes import one_mesh
        from pocket3d.geometry.validate import load_scene
        from pocket3d.models.builtin.texturing import has_usable_uvs

        self.check_request(images=len(inputs.images), text=inputs.text, params=params)
        if inputs.mesh is None:
            raise InputRejected("TRELLIS.2 texturing needs a mesh")
        settings = self.settings(params, inputs.quality)
        resolution = int(settings.get("resolution") or 1024)
        seed = seed_for(inputs)
        progress(0.02, "loading the mesh")
        fmt = inputs.mesh.suffix.lstrip(".").lower()
        given = one_mesh(load_scene(inputs.mesh, fmt), colors=False)
        if len(given.faces) == 0 or float(np.ptp(given.vertices, axis=0).max()) <= 0:
            raise InputRejected("the mesh has no faces with any extent to put a texture on")
        vertices = np.asarray(given.vertices, dtype=np.float64)
        keep_uvs = has_usable_uvs(given)
        visual = trimesh.visual.TextureVisuals(uv=np.asarray(given.visual.uv)) if keep_uvs else None
        mesh = trimesh.Trimesh(vertices, np.asarray(given.faces), visual=visual, process=False)
        # The pipeline centres the mesh on its bounding box and scales its longest side to 0.99999 (preprocess_mesh);
        # the result is put back where the given mesh was, at its size.
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        centre, scale = (low + high) / 2, 0.99999 / float((high - low).max())
        progress(0.05, "reading the reference image")
        image = object_image(inputs.images[0], "the reference image")
        with self.one_call() as pipeline:
            progress(0.08, f"seed {seed}, {resolution}³, {'keeping the mesh UVs' if keep_uvs else 'new UVs'}")
            steps = steps_of(settings, "tex_slat_sampling_steps", pipeline, "tex_slat_sampler_params")
            with sampler_progress(pipeline, [("tex_slat_sampler", "material", steps, 1)], progress, 0.1, 0.8):
                out = pipeline.run(mesh, image, seed=seed, tex_slat_sampler_params=_stage_params(settings, "tex_slat"),
                                   preprocess_image=True, resolution=resolution,
                                   texture_size=int(inputs.texture_resolution))
            release_memory()
        progress(0.92, "putting the textured mesh back in place")
        placed = np.asarray(out.vertices, dtype=np.float64) / scale + centre
        normals = np.asarray(out.vertex_normals, dtype=np.float64)
        textured = trimesh.Trimesh(placed, np.asarray(out.faces), vertex_normals=normals, visual=out.visual,
                                   process=False)
        progress(0.97, "writing the GLB")
        return {"mesh": write_glb(textured, inputs.work_dir)}
