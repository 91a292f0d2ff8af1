"""Hunyuan3D-2.1: image -> untextured shape (``hy3dshape``) and mesh + image -> PBR texture (``hy3dpaint``), from a
local checkout of Tencent-Hunyuan/Hunyuan3D-2.1 named by ``options.source`` (the code is not on PyPI).

The checkout is laid out as two source trees that its own demos put on ``sys.path`` (``demo.py``, ``gradio_app.py``):
``<checkout>/hy3dshape`` holds the package ``hy3dshape``, and ``<checkout>/hy3dpaint`` holds top-level modules
(``textureGenPipeline``, ``DifferentiableRenderer``, ``utils``, ``hunyuanpaintpbr``). The adapters put the one they
need first on ``sys.path``, and the checkout itself (for its ``torchvision_fix``). Their top-level names are
generic (``utils``, ``src``): a device worker that also hosts another checkout with such names may import the
wrong one, so give such models their own device or worker.

**Shape** (``hy3dshape/hy3dshape/pipelines.py``): ``Hunyuan3DDiTFlowMatchingPipeline.from_pretrained(weights,
subfolder='hunyuan3d-dit-v2-1', use_safetensors=False, variant='fp16', device=..., dtype=...)`` reads
``<weights>/<subfolder>/config.yaml`` and ``model.fp16.ckpt`` (a local folder, or the hub id
``tencent/Hunyuan3D-2.1``); ``pipeline(image=..., num_inference_steps, guidance_scale, octree_resolution,
num_chunks, generator, callback, callback_steps)`` returns a list of trimesh meshes. The result is cleaned as
upstream's demos do (``hy3dshape.postprocessors``: floaters, degenerate faces, faces reduced), and is untextured:
``textured: false`` and ``paint_with: hunyuan3d-2.1-paint`` in models.yaml. About 10 GB.

**PBR paint** (``hy3dpaint/textureGenPipeline.py``): ``Hunyuan3DPaintPipeline(Hunyuan3DPaintConfig(max_num_view,
resolution))`` loads the multiview PBR diffusion model (``hunyuan3d-paintpbr-v2-1`` of the hub repo, through
``huggingface_hub.snapshot_download``: ``options.weights`` must be a hub id, cached when offline), DINOv2
(``options.dino_weights``, default ``facebook/dinov2-giant``) and RealESRGAN (``options.realesrgan``, default
``<checkout>/hy3dpaint/ckpt/RealESRGAN_x4plus.pth``, which its README downloads). The config's file paths are
relative to the directory the demo runs in, so the adapter makes them absolute in the checkout. ``pipeline(
mesh_path, image_path, output_mesh_path, use_remesh, save_glb)`` remeshes (pymeshlab, at most 40k faces),
unwraps (xatlas), picks ``max_num_view`` cameras, generates albedo and metallic-roughness views at
``resolution``, upscales them, bakes and inpaints both, and writes an OBJ with ``<name>.jpg``,
``<name>_metallic.jpg`` and ``<name>_roughness.jpg`` (named in its MTL as ``map_Kd``, ``map_Pm``, ``map_Pr``).
``save_glb=True`` would convert it with Blender and report nothing when that fails; like upstream's gradio app,
the adapter asks for the OBJ only and writes the GLB itself: the albedo as base colour, roughness and metallic
packed into glTF's metallicRoughness texture (G and B). It needs the CUDA rasteriser and the mesh inpainter
built from the checkout (``custom_rasterizer``, ``compile_mesh_painter.sh``), and bpy and realesrgan installed
(the checkout's requirements.txt pins bpy 4.0, a Python 3.10 wheel: Python 3.11 needs bpy 4.1 or later); each
missing piece is an unavailable reason. About 21 GB, with peaks past 24 GB (Hunyuan3D-2.1 #80): the low and
medium presets paint 6 views at 512 px, the high one 8 at 768 (the gradio app's choice), and the texture is
baked no larger than the preset allows.

Both want the object cut out of its image (``cutout: true``).
"""

from __future__ import annotations

import logging
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.adapters.base import (
    WeightedModel,
    hub_cached,
    hub_offline,
    is_local,
    paths_on_sys_path,
    rgba_image,
    write_glb,
)
from pocket3d.models.adapters.hunyuan3d import SHAPE_PRESETS, ShapeParams, generate_shape
from pocket3d.models.adapters.hunyuan3d_paint import (
    DEFAULT_MAX_FACES,
    StageHook,
    extension_reasons,
    importable,
    read_mesh,
    reference_image,
    stage_hooks,
)
from pocket3d.models.spec import InputRejected, ModelSpec, ProgressFn, RunInputs

log = logging.getLogger(__name__)

SHAPE_FOLDER = "hunyuan3d-dit-v2-1"
PAINT_FOLDER = "hunyuan3d-paintpbr-v2-1"
CHECKOUT_URL = "https://github.com/Tencent-Hunyuan/Hunyuan3D-2.1"
RASTERISER = {"custom_rasterizer_kernel": "build the checkout's CUDA rasteriser: pip install "
                                          "./hy3dpaint/custom_rasterizer (see its README)"}


class _CheckoutModel(WeightedModel):
    """A model whose code is one source tree of the Hunyuan3D-2.1 checkout in ``options.source``."""

    tree: ClassVar[str]  # the checkout's folder to put on sys.path
    marker: ClassVar[str]  # a file every checkout has, relative to it
    default_weights = "tencent/Hunyuan3D-2.1"

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)  # puts the checkout itself on sys.path
        self._add_tree(spec)

    @classmethod
    def warm(cls, spec: ModelSpec) -> None:
        # The tree goes on sys.path before the warm imports: with the checkout alone there, ``import hy3dshape``
        # would find the checkout's outer hy3dshape/ folder as a namespace package and keep it in sys.modules, and
        # the load's ``hy3dshape.pipelines`` would then not be found.
        cls._add_tree(spec)
        super().warm(spec)

    @classmethod
    def _add_tree(cls, spec: ModelSpec) -> None:
        root = checkout(spec)
        if root is not None and (root / cls.tree).is_dir() and str(root / cls.tree) not in sys.path:
            sys.path.insert(0, str(root / cls.tree))

    @classmethod
    def unavailable_reasons(cls, spec: ModelSpec) -> list[str]:
        root = checkout(spec)
        if root is None:
            reasons = [f"options.source is not set: name a checkout of {CHECKOUT_URL}"]
        elif not root.is_dir():
            reasons = [f"source checkout not found at {root}"]
        elif not (root / cls.marker).is_file():
            reasons = [f"{root} is not a checkout of {CHECKOUT_URL}: it lacks {cls.marker}"]
        else:
            with paths_on_sys_path(root / cls.tree, root):
                reasons = [f"python package {p!r} is not installed" for p in cls.requires if not importable(p)]
        return reasons + cls.weights_reasons(spec)

    @property
    def root(self) -> Path:
        root = checkout(self.spec)
        assert root is not None
        return root


# -- shape --------------------------------------------------------------------------------------------------------


Hunyuan3D21ShapeParams = ShapeParams


class Hunyuan3D21ShapeModel(_CheckoutModel):
    """Image -> untextured shape with Hunyuan3D-2.1's DiT (``hy3dshape``)."""

    Params = Hunyuan3D21ShapeParams
    requires: ClassVar[tuple[str, ...]] = ("torch", "diffusers", "pymeshlab", "hy3dshape")
    tree = "hy3dshape"
    marker = "hy3dshape/hy3dshape/pipelines.py"
    # Upstream gradio: 30 steps at octree 256, guidance 5.0, 8000 chunks; the pipeline's own default is 50 at 384.
    presets: ClassVar[dict[str, dict[str, Any]]] = SHAPE_PRESETS

    @classmethod
    def required_files(cls, spec: ModelSpec) -> tuple[str, ...]:
        subfolder = spec.options.get("subfolder", SHAPE_FOLDER)
        return (f"{subfolder}/config.yaml", f"{subfolder}/{_checkpoint_name(spec)}")

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: BaseModel) -> None:
        if images != 1:
            raise InputRejected(f"Hunyuan3D-2.1 takes one image of the object, got {images}")

    def build(self) -> Any:
        from hy3dshape.pipelines import Hunyuan3DDiTFlowMatchingPipeline

        options = self.spec.options
        pipeline = Hunyuan3DDiTFlowMatchingPipeline.from_pretrained(
            self.weights, subfolder=options.get("subfolder", SHAPE_FOLDER),
            use_safetensors=bool(options.get("use_safetensors", False)), variant=options.get("variant", "fp16"),
            device=self.torch_device, dtype=self.dtype)
        if options.get("flashvdm"):
            pipeline.enable_flashvdm(mc_algo=options.get("mc_algo", "mc"))
        return pipeline

    def run(self, inputs: RunInputs, params: ShapeParams, progress: ProgressFn) -> dict[str, Path]:
        from hy3dshape import postprocessors

        self.check_request(images=len(inputs.images), text=inputs.text, params=params)
        image = rgba_image(inputs.images[0])
        return {"mesh": generate_shape(self, image, inputs, params, progress, postprocessors, "Hunyuan3D-2.1")}


def _checkpoint_name(spec: ModelSpec) -> str:
    variant = spec.options.get("variant", "fp16")
    extension = "safetensors" if spec.options.get("use_safetensors") else "ckpt"
    return f"model.{variant}.{extension}" if variant else f"model.{extension}"


# -- PBR paint ----------------------------------------------------------------------------------------------------


class Hunyuan3D21PaintParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_num_view: int | None = Field(None, ge=6, le=9, description="camera views painted (upstream: 6 to 9); "
                                                                  "default from quality")
    resolution: Literal[512, 768] | None = Field(None, description="pixels of each painted view (upstream: 512 "
                                                                   "or 768); default from quality")
    remesh: bool = Field(True, description="let the pipeline remesh the mesh first (pymeshlab, at most 40k "
                                           "faces), as upstream does by default")
    max_faces: int | None = Field(None, ge=1000, le=500_000,
                                  description=f"the mesh is reduced to this many faces before it is handed over "
                                              f"(default {DEFAULT_MAX_FACES})")


class Hunyuan3D21PaintModel(_CheckoutModel):
    """Mesh + reference image -> mesh with PBR textures (albedo, metallic, roughness) by Hunyuan3D-2.1's paint."""

    Params = Hunyuan3D21PaintParams
    # textureGenPipeline imports bpy (its OBJ/GLB helpers) at import, and RealESRGAN when the pipeline is made.
    requires: ClassVar[tuple[str, ...]] = ("torch", "diffusers", "omegaconf", "bpy", "realesrgan",
                                           "textureGenPipeline")
    tree = "hy3dpaint"
    marker = "hy3dpaint/textureGenPipeline.py"
    weight_files = (f"{PAINT_FOLDER}/model_index.json",)
    # demo.py: 6 views at 512; gradio_app.py: 8 views at 768. The pipeline bakes at twice the texture it saves.
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "low": {"max_num_view": 6, "resolution": 512, "max_texture_size": 1024, "max_faces": DEFAULT_MAX_FACES},
        "medium": {"max_num_view": 6, "resolution": 512, "max_texture_size": 2048, "max_faces": DEFAULT_MAX_FACES},
        "high": {"max_num_view": 8, "resolution": 768, "max_texture_size": 2048, "max_faces": DEFAULT_MAX_FACES},
    }

    @classmethod
    def unavailable_reasons(cls, spec: ModelSpec) -> list[str]:
        reasons = super().unavailable_reasons(spec) + extension_reasons(RASTERISER)
        root = checkout(spec)
        if root is not None and (root / cls.marker).is_file():
            renderer = root / "hy3dpaint" / "DifferentiableRenderer"
            if not any((renderer / f"mesh_inpaint_processor{suffix}").is_file() for suffix in EXTENSION_SUFFIXES):
                # MeshRender imports it inside a try: without it, every job would fail at the inpainting step
                reasons.append(f"the mesh inpainter is not built in {renderer}: run compile_mesh_painter.sh there "
                               "(see the checkout's README)")
            realesrgan = _realesrgan(spec, root)
            if not realesrgan.is_file():
                reasons.append(f"RealESRGAN weights not found at {realesrgan} (download RealESRGAN_x4plus.pth "
                               "there, as the checkout's README says, or set options.realesrgan)")
        dino = str(spec.options.get("dino_weights", "facebook/dinov2-giant"))
        if is_local(dino):
            if not Path(dino).expanduser().is_dir():
                reasons.append(f"DINOv2 weights not found at {Path(dino).expanduser()}")
        elif hub_offline() and not hub_cached(dino, "config.json"):
            reasons.append(f"DINOv2 weights {dino!r} are not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                           "set: download them first or point options.dino_weights at a local folder")
        return reasons

    @classmethod
    def weights_reasons(cls, spec: ModelSpec) -> list[str]:
        weights = str(spec.options.get("weights", cls.default_weights))
        if is_local(weights):
            return [(f"options.weights must be a Hugging Face hub id, not the folder {weights}: Hunyuan3D-2.1's "
                     f"paint pipeline fetches {PAINT_FOLDER} with huggingface_hub.snapshot_download (put the files "
                     "in the Hugging Face cache, HF_HOME, to run offline)")]
        return super().weights_reasons(spec)

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: BaseModel) -> None:
        if images != 1:
            raise InputRejected(f"Hunyuan3D-2.1 paint takes one reference image of the object (no text), got "
                                f"{images}")

    def build(self) -> Any:
        _apply_torchvision_fix()
        from textureGenPipeline import Hunyuan3DPaintConfig, Hunyuan3DPaintPipeline

        medium = self.presets["medium"]
        config = Hunyuan3DPaintConfig(medium["max_num_view"], medium["resolution"])
        paint = self.root / "hy3dpaint"
        config.device = self.torch_device
        config.multiview_cfg_path = str(paint / "cfgs" / "hunyuan-paint-pbr.yaml")
        config.custom_pipeline = str(paint / "hunyuanpaintpbr")
        config.multiview_pretrained_path = self.weights
        config.dino_ckpt_path = str(self.spec.options.get("dino_weights", "facebook/dinov2-giant"))
        config.realesrgan_ckpt_path = str(_realesrgan(self.spec, self.root))
        if self.spec.options.get("render_size"):
            config.render_size = int(self.spec.options["render_size"])
        return Hunyuan3DPaintPipeline(config)

    def run(self, inputs: RunInputs, params: Hunyuan3D21PaintParams, progress: ProgressFn) -> dict[str, Path]:
        if inputs.mesh is None:
            raise InputRejected("texturing needs a mesh")
        self.check_request(images=len(inputs.images), text=inputs.text, params=params)
        knobs = self.settings(params, inputs.quality)
        progress(0.02, "reading the mesh and the reference image")
        mesh = read_mesh(inputs.mesh, int(knobs["max_faces"]))
        work = inputs.work_dir
        mesh_path, image_path, out_path = work / "white_mesh.obj", work / "reference.png", work / "textured_mesh.obj"
        mesh.export(mesh_path, file_type="obj", include_normals=False, include_texture=False)
        reference_image(inputs.images[0]).save(image_path)
        # The pipeline bakes at config.texture_size and saves the maps at half that size.
        bake_size = min(inputs.texture_resolution, int(knobs["max_texture_size"]))
        views, resolution = int(knobs["max_num_view"]), int(knobs["resolution"])
        with self.one_call() as pipeline:
            pipeline.config.max_selected_view_num = views
            pipeline.config.resolution = resolution
            pipeline.config.texture_size = 2 * bake_size
            pipeline.render.set_default_texture_resolution(2 * bake_size)
            progress(0.05, f"remeshing and unwrapping; {views} views at {resolution} px, texture {bake_size} px")
            stages = [
                StageHook(pipeline.models, "multiview_model", 0.15,
                          f"multiview PBR diffusion: albedo and metallic-roughness, {views} views"),
                StageHook(pipeline.models, "super_model", 0.55, "upscaling the views (RealESRGAN)"),
                StageHook(pipeline.view_processor, "bake_from_multiview", 0.8, "baking the views into the textures"),
                StageHook(pipeline.view_processor, "texture_inpaint", 0.88, "inpainting what no view saw"),
            ]
            with stage_hooks(stages, progress):
                written = pipeline(mesh_path=str(mesh_path), image_path=str(image_path),
                                   output_mesh_path=str(out_path), use_remesh=bool(knobs["remesh"]), save_glb=False)
        progress(0.94, "writing the PBR GLB")
        return {"mesh": write_pbr_glb(Path(written or out_path), work, inputs.texture_resolution)}


def write_pbr_glb(obj_path: Path, work_dir: Path, texture_size: int) -> Path:
    """hy3dpaint's OBJ and the maps its MTL names as a GLB: ``map_Kd`` the base colour, ``map_Pr`` and ``map_Pm``
    packed into the metallicRoughness texture (roughness in G, metallic in B), ``map_Bump`` the normal map."""
    import numpy as np
    import trimesh
    from PIL import Image

    maps = _mtl_maps(obj_path.with_suffix(".mtl"))
    if "map_Kd" not in maps:
        raise RuntimeError(f"the paint pipeline wrote no base colour texture (map_Kd) with {obj_path.name}")
    mesh = trimesh.load(obj_path, force="mesh", process=False, skip_materials=True)
    uv = getattr(mesh.visual, "uv", None)
    if uv is None or len(mesh.faces) == 0:
        raise RuntimeError(f"the paint pipeline wrote {obj_path.name} without UVs or faces")

    def read(key: str, mode: str) -> Any:
        with Image.open(maps[key]) as img:
            img = img.convert(mode)
            size = (texture_size, texture_size)
            return img if img.size == size else img.resize(size, Image.Resampling.LANCZOS)

    material: dict[str, Any] = {"baseColorTexture": read("map_Kd", "RGB"), "baseColorFactor": [255, 255, 255, 255]}
    if "map_Pm" in maps or "map_Pr" in maps:
        full = np.full((texture_size, texture_size), 255, np.uint8)
        rough = np.asarray(read("map_Pr", "L")) if "map_Pr" in maps else full
        metal = np.asarray(read("map_Pm", "L")) if "map_Pm" in maps else np.zeros_like(full)
        material["metallicRoughnessTexture"] = Image.fromarray(np.dstack([full, rough, metal]))
        material["metallicFactor"], material["roughnessFactor"] = 1.0, 1.0
    else:
        material["metallicFactor"], material["roughnessFactor"] = 0.0, 1.0
    if "map_Bump" in maps:
        material["normalTexture"] = read("map_Bump", "RGB")
    pbr = trimesh.visual.material.PBRMaterial(**material)
    out = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False,
                          visual=trimesh.visual.TextureVisuals(uv=uv, material=pbr))
    return write_glb(out, work_dir)


def _mtl_maps(mtl: Path) -> dict[str, Path]:
    """The texture maps an MTL file names (the file name is the last word of the line: options come before)."""
    if not mtl.is_file():
        raise RuntimeError(f"the paint pipeline wrote no material file {mtl.name}")
    maps: dict[str, Path] = {}
    for line in mtl.read_text(errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("map_Kd", "map_Pm", "map_Pr", "map_Bump"):
            path = mtl.parent / words[-1]
            if not path.is_file():
                raise RuntimeError(f"the paint pipeline's {words[0]} map {words[-1]} is missing")
            maps[words[0]] = path
    return maps


# -- the checkout -------------------------------------------------------------------------------------------------


def checkout(spec: ModelSpec) -> Path | None:
    source = spec.options.get("source")
    return Path(str(source)).expanduser() if source else None


def _realesrgan(spec: ModelSpec, root: Path) -> Path:
    named = spec.options.get("realesrgan")
    return Path(str(named)).expanduser() if named else root / "hy3dpaint" / "ckpt" / "RealESRGAN_x4plus.pth"


def _apply_torchvision_fix() -> None:
    """What the checkout's demos do before loading the paint pipeline: RealESRGAN's basicsr imports
    ``torchvision.transforms.functional_tensor``, which newer torchvision removed; the checkout's
    ``torchvision_fix.apply_fix`` puts an equivalent in its place."""
    try:
        from torchvision_fix import apply_fix
    except ImportError:  # an older checkout without it, or no torchvision (then realesrgan fails on its own)
        return
    try:
        apply_fix()
    except Exception as e:  # noqa: BLE001 - as the demos do: a fix that fails is a warning, the load goes on
        log.warning("Hunyuan3D-2.1's torchvision_fix failed: %s: %s", type(e).__name__, e)
