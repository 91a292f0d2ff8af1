"""Hunyuan3D-2 shape generation through ``hy3dgen`` (PyPI, ``pip install 'pocket3d[hunyuan3d]'``).

``Hunyuan3DDiTFlowMatchingPipeline.from_pretrained(weights, subfolder=..., variant=...)`` loads
``<weights>/<subfolder>/config.yaml`` and ``model.<variant>.safetensors`` from a local folder, or from the hub
(``tencent/Hunyuan3D-2``, ``-2mini``, ``-2mv``; turbo variants are other subfolders). One variant per models.yaml
entry: ``options.subfolder`` picks it, ``options.multiview`` marks the -2mv model (2-4 views named front, left,
back, right), ``options.flashvdm`` turns on the turbo decoder with the VAE in ``options.vae_subfolder`` of the
same weights.

The mesh comes out untextured (``textured: false`` in models.yaml, so a paint stage follows), after the same
clean-up the upstream demos apply: floaters and degenerate faces removed, faces reduced to the preset's count.
The pipeline wants the object cut out of its background (``cutout: true``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.adapters.base import WeightedModel, rgba_image, steps_callback, write_glb
from pocket3d.models.spec import InputRejected, ModelSpec, ProgressFn, RunInputs

VIEW_NAMES = ("front", "left", "back", "right")


class ShapeParams(BaseModel):
    """The knobs of Hunyuan3D's shape DiT, 2.0 and 2.1 alike."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(None, ge=1, le=100, description="diffusion steps; default from quality")
    guidance_scale: float | None = Field(None, ge=0, le=20, description="classifier-free guidance")
    octree_resolution: int | None = Field(None, ge=16, le=512,
                                          description="marching-cubes grid of the decoded field")
    num_chunks: int | None = Field(None, ge=1000, le=200000, description="query points decoded per batch")
    max_faces: int | None = Field(None, ge=100, le=2_000_000, description="faces left after reduction")
    remove_floaters: bool = True


# Upstream gradio defaults: 30 steps at octree 256, 5.0 guidance, 40k faces; turbo variants override steps.
SHAPE_PRESETS: dict[str, dict[str, Any]] = {
    "low": {"steps": 20, "guidance_scale": 5.0, "octree_resolution": 196, "num_chunks": 8000, "max_faces": 20000},
    "medium": {"steps": 30, "guidance_scale": 5.0, "octree_resolution": 256, "num_chunks": 8000, "max_faces": 40000},
    "high": {"steps": 50, "guidance_scale": 5.0, "octree_resolution": 384, "num_chunks": 20000, "max_faces": 100000},
}


class Hunyuan3DShapeParams(ShapeParams):
    views: list[str] | None = Field(None, description="multiview model only: the view of each image, from "
                                                      "front, left, back, right (default: the request's named "
                                                      "views, else in that order)")


class Hunyuan3DShapeModel(WeightedModel):
    """Image(s) -> untextured shape with Hunyuan3D-2 (or -2mini, -2mv, turbo) through hy3dgen."""

    Params = Hunyuan3DShapeParams
    requires: ClassVar[tuple[str, ...]] = ("torch", "torchvision", "hy3dgen", "diffusers", "transformers",
                                           "pymeshlab")
    warm_modules: ClassVar[tuple[str, ...]] = ("hy3dgen.shapegen",)  # what build() imports; hy3dgen alone does not
    default_weights = "tencent/Hunyuan3D-2"
    presets: ClassVar[dict[str, dict[str, Any]]] = SHAPE_PRESETS

    @classmethod
    def required_files(cls, spec: ModelSpec) -> tuple[str, ...]:
        variant = spec.options.get("variant", "fp16")
        checkpoint = f"model.{variant}.safetensors" if variant else "model.safetensors"
        files = [f"{_subfolder(spec)}/config.yaml", f"{_subfolder(spec)}/{checkpoint}"]
        if spec.options.get("flashvdm"):
            files.append(f"{_vae_subfolder(spec)}/config.yaml")
        return tuple(files)

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: BaseModel) -> None:
        views = getattr(params, "views", None)
        if views is not None:
            unknown = sorted(set(views) - set(VIEW_NAMES))
            if unknown or len(set(views)) != len(views):
                raise InputRejected(f"parameters.views: each of {list(VIEW_NAMES)} at most once, not {views}")
            if images and len(views) != images:
                raise InputRejected(f"parameters.views names {len(views)} views for {images} images")

    def build(self) -> Any:
        from hy3dgen.shapegen import Hunyuan3DDiTFlowMatchingPipeline

        pipeline = Hunyuan3DDiTFlowMatchingPipeline.from_pretrained(
            self.weights, subfolder=_subfolder(self.spec), variant=self.spec.options.get("variant", "fp16"),
            use_safetensors=True, device=self.torch_device, dtype=self.dtype)
        if self.spec.options.get("flashvdm"):
            # hy3dgen swaps in the turbo VAE from the hub by the folder's name; take it from the same weights.
            from hy3dgen.shapegen.models.autoencoders import ShapeVAE

            pipeline.vae = ShapeVAE.from_pretrained(
                self.weights, subfolder=_vae_subfolder(self.spec), use_safetensors=True,
                variant=self.spec.options.get("variant", "fp16"), device=self.torch_device, dtype=self.dtype)
            pipeline.enable_flashvdm(replace_vae=False, mc_algo=self.spec.options.get("mc_algo", "mc"))
        return pipeline

    def run(self, inputs: RunInputs, params: Hunyuan3DShapeParams, progress: ProgressFn) -> dict[str, Path]:
        from hy3dgen.shapegen import postprocessors

        image = self._condition(inputs, params)
        return {"mesh": generate_shape(self, image, inputs, params, progress, postprocessors, "Hunyuan3D-2")}

    def _condition(self, inputs: RunInputs, params: Hunyuan3DShapeParams) -> Any:
        if self.spec.options.get("multiview"):
            if not 1 <= len(inputs.images) <= len(VIEW_NAMES):
                raise InputRejected(f"Hunyuan3D-2mv takes 1-4 views, got {len(inputs.images)}")
            names = params.views or inputs.view_names or list(VIEW_NAMES[:len(inputs.images)])
            return {name: rgba_image(path) for name, path in zip(names, inputs.images, strict=True)}
        if params.views is not None:
            raise InputRejected(f"parameters.views names the views of a multiview model; {self.spec.id} takes one "
                                "image")
        if len(inputs.images) != 1:
            raise InputRejected(f"{self.spec.id} takes one image, got {len(inputs.images)}")
        return rgba_image(inputs.images[0])


def generate_shape(adapter: WeightedModel, image: Any, inputs: RunInputs, params: ShapeParams, progress: ProgressFn,
                   postprocessors: Any, name: str) -> Path:
    """Sample the shape and clean it as the upstream demos do (2.0's hy3dgen and 2.1's hy3dshape share the call
    and the post-processors); the GLB it wrote."""
    knobs = adapter.settings(params, inputs.quality)
    progress(0.02, "conditioning on the image")
    # The lock spans the clean-up too: two threads in pymeshlab while torch runs crashed the worker (SIGSEGV).
    with adapter.one_call() as pipeline:
        meshes = pipeline(
            image=image, num_inference_steps=knobs["steps"], guidance_scale=knobs["guidance_scale"],
            octree_resolution=knobs["octree_resolution"], num_chunks=knobs["num_chunks"],
            generator=adapter.generator(inputs.seed), output_type="trimesh", enable_pbar=False,
            callback=steps_callback(progress, knobs["steps"], 0.05, 0.8), callback_steps=1)
        mesh = meshes[0] if isinstance(meshes, list) else meshes
        if mesh is None or len(mesh.faces) == 0:
            raise RuntimeError(f"{name} decoded no surface from this image (an empty occupancy field)")
        progress(0.85, "cleaning the mesh")
        if params.remove_floaters:
            mesh = postprocessors.FloaterRemover()(mesh)
        mesh = postprocessors.DegenerateFaceRemover()(mesh)
        if len(mesh.faces) > knobs["max_faces"]:
            mesh = postprocessors.FaceReducer()(mesh, max_facenum=knobs["max_faces"])
    progress(0.95, f"{len(mesh.faces)} faces")
    return write_glb(mesh, inputs.work_dir)


def _subfolder(spec: ModelSpec) -> str:
    return str(spec.options.get("subfolder", "hunyuan3d-dit-v2-0"))


def _vae_subfolder(spec: ModelSpec) -> str:
    return str(spec.options.get("vae_subfolder", "hunyuan3d-vae-v2-0-turbo"))
