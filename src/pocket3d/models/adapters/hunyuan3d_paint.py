"""Texture for a given mesh with Hunyuan3D-2's paint model, through ``hy3dgen.texgen`` (``pip install
'pocket3d[hunyuan3d]'``; see Tencent-Hunyuan/Hunyuan3D-2, ``hy3dgen/texgen/pipelines.py``).

``Hunyuan3DPaintPipeline.from_pretrained(weights)`` loads two diffusion models from ``<weights>/
hunyuan3d-delight-v2-0`` (takes light and shadow out of the reference image) and ``<weights>/hunyuan3d-paint-v2-0``
(paints six views of the mesh from its normal and position renders). ``pipeline(mesh, image=image)`` then
recentres the image on its alpha, delights it, unwraps the mesh with xatlas, renders normals and positions from
six cameras (azimuth 0/90/180/270, top, bottom), runs the multiview diffusion, bakes the views into the texture
by back-projection, inpaints what no view saw, and returns the trimesh with its texture.

Two releases differ, and the adapter follows the one installed:

- PyPI ``hy3dgen`` 2.0.2 (the pinned extra): ``from_pretrained(model_path)`` with the ``hunyuan3d-paint-v2-0``
  model, and one reference image.
- GitHub main since "hypaint-turbo and mv" (March 2025): ``from_pretrained(model_path, subfolder=...)``, where
  ``hunyuan3d-paint-v2-0-turbo`` is the library's default, and a list of reference images. pocket3d passes
  ``options.subfolder`` (default ``hunyuan3d-paint-v2-0``, the model both releases have), and several images only
  to a release that takes them (models.yaml adds ``multiview`` to the inputs then).

Where it runs: CUDA only (the library's config fixes ``device='cuda'``), with the ``custom_rasterizer`` CUDA
extension built from the GitHub repository (``hy3dgen/texgen/custom_rasterizer``; the PyPI wheel lacks it). About
16 GB; out-of-memory errors during texturing are the common failure (Hunyuan3D-2 #102, #302), so
``options.cpu_offload`` turns on the library's model CPU offload (upstream's ``--low_vram_mode``), and the low
preset renders and bakes smaller.

The knobs: the diffusion steps are fixed inside the library (delight 50, multiview 30), so the quality presets
set the render size (each view is upscaled to it and back-projected at it) and the largest texture baked; the
texture is baked at the request's ``texture_resolution`` up to that limit, and scaled to it. The mesh is reduced
to ``max_faces`` first (upstream reduces to 40k faces before painting; xatlas slows down fast above that).

Inputs: the mesh is taken as it is, +Y up and facing +Z (glTF's frame, and that of Hunyuan3D's shapes). The
image should be the object cut out of its background (``cutout: true`` in models.yaml puts a background-removal
stage first, as Hunyuan's own flow runs rembg first): an RGBA cut-out is recentred on its alpha, an opaque image
is used as it is.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.adapters.base import WeightedModel, has_alpha_cutout, rgba_image, write_glb
from pocket3d.models.spec import InputRejected, ModelSpec, ProgressFn, RunInputs

DELIGHT_FOLDER = "hunyuan3d-delight-v2-0"
PAINT_FOLDER = "hunyuan3d-paint-v2-0"
MAX_IMAGES = 4
DEFAULT_MAX_FACES = 40_000  # what upstream's demos reduce a shape to before painting it


class Hunyuan3DPaintParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    render_size: int | None = Field(None, ge=256, le=4096,
                                    description="pixels of each painted view as it is back-projected into the "
                                                "texture; default from quality (upstream: 2048)")
    max_faces: int | None = Field(None, ge=1000, le=500_000,
                                  description=f"the mesh is reduced to this many faces before it is unwrapped "
                                              f"and painted (default {DEFAULT_MAX_FACES}, as upstream)")


class Hunyuan3DPaintModel(WeightedModel):
    """Mesh + reference image -> textured mesh with Hunyuan3D-2's delight and multiview paint models."""

    Params = Hunyuan3DPaintParams
    requires: ClassVar[tuple[str, ...]] = ("torch", "diffusers", "hy3dgen.texgen")
    # Compiled extensions the library imports at load, with how to get them.
    extensions: ClassVar[dict[str, str]] = {
        "custom_rasterizer_kernel": "build Hunyuan3D-2's CUDA rasteriser: pip install "
                                    "./hy3dgen/texgen/custom_rasterizer from a checkout of Tencent-Hunyuan/"
                                    "Hunyuan3D-2 (the PyPI wheel of hy3dgen does not include it)",
    }
    default_weights = "tencent/Hunyuan3D-2"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "low": {"render_size": 1024, "max_texture_size": 1024, "max_faces": DEFAULT_MAX_FACES},
        "medium": {"render_size": 2048, "max_texture_size": 2048, "max_faces": DEFAULT_MAX_FACES},
        "high": {"render_size": 2048, "max_texture_size": 4096, "max_faces": DEFAULT_MAX_FACES},
    }

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.takes_several_images = False

    @classmethod
    def unavailable_reasons(cls, spec: ModelSpec) -> list[str]:
        return super().unavailable_reasons(spec) + extension_reasons(cls.extensions)

    @classmethod
    def required_files(cls, spec: ModelSpec) -> tuple[str, ...]:
        return (f"{DELIGHT_FOLDER}/model_index.json", f"{_subfolder(spec)}/model_index.json")

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: BaseModel) -> None:
        if images < 1:
            raise InputRejected("Hunyuan3D-2 paint needs a reference image of the object (it takes no text)")
        if images > MAX_IMAGES:
            raise InputRejected(f"Hunyuan3D-2 paint takes at most {MAX_IMAGES} reference images, got {images}")

    def build(self) -> Any:
        from hy3dgen.texgen import Hunyuan3DPaintPipeline

        takes_subfolder = "subfolder" in inspect.signature(Hunyuan3DPaintPipeline.from_pretrained).parameters
        subfolder = _subfolder(self.spec)
        if takes_subfolder:
            pipeline = Hunyuan3DPaintPipeline.from_pretrained(self.weights, subfolder=subfolder)
        elif subfolder != PAINT_FOLDER:
            raise RuntimeError(f"options.subfolder {subfolder!r} needs hy3dgen from Hunyuan3D-2's GitHub "
                               f"repository: the installed release loads only {PAINT_FOLDER}")
        else:
            pipeline = Hunyuan3DPaintPipeline.from_pretrained(self.weights)
        # The release that takes a subfolder is the one whose __call__ takes a list of reference images: both came
        # in the same upstream change, and __call__'s signature (mesh, image) did not change with it.
        self.takes_several_images = takes_subfolder
        if self.spec.options.get("cpu_offload"):
            pipeline.enable_model_cpu_offload()
        return pipeline

    def run(self, inputs: RunInputs, params: Hunyuan3DPaintParams, progress: ProgressFn) -> dict[str, Path]:
        if inputs.mesh is None:
            raise InputRejected("texturing needs a mesh")
        self.check_request(images=len(inputs.images), text=inputs.text, params=params)
        knobs = self.settings(params, inputs.quality)
        progress(0.02, "reading the mesh and the reference image")
        mesh = read_mesh(inputs.mesh, int(knobs["max_faces"]))
        images = [reference_image(path) for path in inputs.images]
        bake_size = min(inputs.texture_resolution, int(knobs["max_texture_size"]))
        render_size = int(knobs["render_size"])
        with self.one_call() as pipeline:
            if len(images) > 1 and not self.takes_several_images:
                raise InputRejected(f"the installed hy3dgen paints from one reference image, {len(images)} were "
                                    "given (several need hy3dgen from Hunyuan3D-2's GitHub repository)")
            _configure(pipeline, render_size=render_size, texture_size=bake_size)
            views = len(pipeline.config.candidate_camera_azims)
            progress(0.05, f"painting {len(mesh.faces)} faces at {render_size} px, texture {bake_size} px")
            stages = [
                StageHook(pipeline.models, "delight_model", 0.08, "removing light and shadow from the image"),
                StageHook(pipeline.models, "multiview_model", 0.25, f"multiview diffusion: {views} views"),
                StageHook(pipeline, "bake_from_multiview", 0.8, f"baking {views} views into the texture"),
                StageHook(pipeline, "texture_inpaint", 0.88, "inpainting what no view saw"),
            ]
            with stage_hooks(stages, progress):
                textured = pipeline(mesh, image=images if len(images) > 1 else images[0])
        progress(0.94, "writing the textured GLB")
        return {"mesh": write_painted_glb(textured, inputs.work_dir, inputs.texture_resolution)}


def _subfolder(spec: ModelSpec) -> str:
    return str(spec.options.get("subfolder", PAINT_FOLDER))


def _configure(pipeline: Any, *, render_size: int, texture_size: int) -> None:
    """This call's render and texture sizes: the library reads them from its config and its renderer."""
    pipeline.config.render_size = render_size
    pipeline.config.texture_size = texture_size
    pipeline.render.set_default_render_resolution(render_size)
    pipeline.render.set_default_texture_resolution(texture_size)
    if hasattr(pipeline.render, "bake_unreliable_kernel_size"):
        # MeshRender derives the border it distrusts at view edges from the render size, in its constructor only.
        pipeline.render.bake_unreliable_kernel_size = int(2 / 512 * render_size)


# -- shared with the Hunyuan3D-2.1 adapters --------------------------------------------------------------------------


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def extension_reasons(extensions: dict[str, str]) -> list[str]:
    return [f"compiled extension {name!r} is not installed: {how}"
            for name, how in extensions.items() if not importable(name)]


def read_mesh(path: Path, max_faces: int) -> Any:
    """The file as one plain mesh, reduced to ``max_faces``: no texture and no UVs (the painter unwraps it itself),
    vertices split at old UV seams welded again, so the new charts do not inherit the old cuts."""
    from pocket3d.geometry.decimate import decimate_mesh
    from pocket3d.geometry.errors import MeshError
    from pocket3d.geometry.meshes import one_mesh, weld
    from pocket3d.geometry.validate import load_scene

    try:
        mesh = one_mesh(load_scene(path, path.suffix.lstrip(".").lower()), colors=False)
    except MeshError as e:
        raise InputRejected(str(e)) from None
    plain = weld(mesh.vertices, mesh.faces).mesh()
    if len(plain.faces) == 0 or plain.area <= 0:
        raise InputRejected("the mesh has no faces with any area to put a texture on")
    return decimate_mesh(plain, max_faces) if len(plain.faces) > max_faces else plain


def reference_image(path: Path) -> Any:
    """The reference image for a painter: RGBA when it is a cut-out (the library recentres it on its alpha), RGB
    when it is opaque (the library takes it as framed). A fully transparent image shows nothing to paint from."""
    import numpy as np

    image = rgba_image(path)
    if has_alpha_cutout(image):
        return image
    if float((np.asarray(image.getchannel("A")) < 16).mean()) >= 0.99:
        raise InputRejected("the reference image is fully transparent: there is no object in it to paint from")
    return image.convert("RGB")


class StageHook:
    """Report ``message`` at ``fraction`` whenever ``owner[name]`` (a dict entry) or ``owner.name`` (a method) is
    called during a run: the libraries' pipelines run every stage in one call and take no callback."""

    def __init__(self, owner: Any, name: str, fraction: float, message: str):
        self.owner, self.name, self.fraction, self.message = owner, name, fraction, message


@contextmanager
def stage_hooks(hooks: list[StageHook], progress: ProgressFn) -> Iterator[None]:
    """Wrap each hooked callable so that ``progress`` runs before it (and may stop the run by raising
    StageCancelled), for the duration of the block; the originals are put back whatever happens, so no wrapper
    (nor ``progress``) stays referenced by the pipeline."""
    with ExitStack() as undo:
        for hook in hooks:
            undo.enter_context(_hooked(hook, progress))
        yield


@contextmanager
def _hooked(hook: StageHook, progress: ProgressFn) -> Iterator[None]:
    owner, name = hook.owner, hook.name
    if isinstance(owner, dict):
        if name not in owner:
            yield
            return
        original = owner[name]
        owner[name] = _Announcing(original, hook, progress)
        try:
            yield
        finally:
            owner[name] = original
        return
    original = getattr(owner, name, None)
    if not callable(original):
        yield
        return
    own = name in vars(owner)
    setattr(owner, name, _Announcing(original, hook, progress))
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


class _Announcing:
    """A callable that reports a stage, then calls the original; attributes read through to the original (the
    library may read ``models['multiview_model'].pipeline`` and the like)."""

    def __init__(self, original: Callable[..., Any], hook: StageHook, progress: ProgressFn):
        self._original, self._hook, self._progress, self._calls = original, hook, progress, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._calls += 1
        suffix = f" ({self._calls})" if self._calls > 1 else ""
        self._progress(self._hook.fraction, self._hook.message + suffix)
        return self._original(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._original, name)


def write_painted_glb(textured: Any, work_dir: Path, texture_size: int) -> Path:
    """The painted trimesh (UVs and a texture image, as hy3dgen returns it) as a GLB with a PBR material whose base
    colour is that texture at ``texture_size``: a matte dielectric, since the model paints albedo only."""
    import trimesh

    if isinstance(textured, trimesh.Scene):
        textured = textured.dump(concatenate=True)
    uv = getattr(textured.visual, "uv", None)
    material = getattr(textured.visual, "material", None)
    image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
    if uv is None or image is None:
        raise RuntimeError("the paint pipeline returned a mesh without a texture")
    base = _sized(image.convert("RGB"), texture_size)
    pbr = trimesh.visual.material.PBRMaterial(baseColorTexture=base, baseColorFactor=[255, 255, 255, 255],
                                               metallicFactor=0.0, roughnessFactor=1.0)
    out = trimesh.Trimesh(textured.vertices, textured.faces, process=False,
                          visual=trimesh.visual.TextureVisuals(uv=uv, material=pbr))
    return write_glb(out, work_dir)


def _sized(image: Any, size: int) -> Any:
    from PIL import Image

    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.LANCZOS)
