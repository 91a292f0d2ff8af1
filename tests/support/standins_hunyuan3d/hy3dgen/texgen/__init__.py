"""TEST STAND-IN for ``hy3dgen.texgen`` (Hunyuan3D-2's paint pipeline); it computes nothing real: no diffusion, no
rasterising. Each "painted" view is the mean colour of the reference image's object, so a test can tell that the
adapter handed the image over.

It mimics the public surface pocket3d's adapter uses, as defined upstream in Tencent-Hunyuan/Hunyuan3D-2,
``hy3dgen/texgen/pipelines.py``:

- ``Hunyuan3DPaintPipeline.from_pretrained(model_path)`` (PyPI 2.0.2), or ``from_pretrained(model_path,
  subfolder='hunyuan3d-paint-v2-0-turbo')`` (GitHub main since "hypaint-turbo and mv"), which checks the folders
  ``hunyuan3d-delight-v2-0`` and the paint subfolder under a local ``model_path``; with a hub id it fails as the
  real one does offline;
- the pipeline's ``config`` (``Hunyuan3DTexGenConfig``: ``render_size``, ``texture_size``, the six candidate
  cameras), ``render`` (``MeshRender``'s ``set_default_render_resolution``/``set_default_texture_resolution``),
  ``models['delight_model']`` and ``models['multiview_model']``, ``bake_from_multiview``, ``texture_inpaint``,
  ``enable_model_cpu_offload``;
- ``pipeline(mesh, image)``: recentre and "delight" the image(s), unwrap the mesh with xatlas (as the real
  ``mesh_uv_wrap`` does, mutating the mesh), "paint" one view per camera, bake, inpaint, and return the trimesh
  with ``TextureVisuals(uv, image, SimpleMaterial)`` as the real ``save_mesh`` does. PyPI 2.0.2 takes one image
  (a list fails on ``image.mode``, as there); GitHub main takes a list.

``POCKET3D_STANDIN_HY3DGEN_API=main`` (read at import) selects the GitHub-main signatures; anything else, 2.0.2.
A reference image of exactly 13 x 13 pixels makes the call raise RuntimeError, so tests reach the adapter's error
path. Calls are recorded with ``standin_calls.record`` as ``hy3dgen.texgen.<entry>``.
"""

from __future__ import annotations

import os

import numpy as np
import trimesh
import xatlas
from PIL import Image, ImageStat
from standin_calls import record

API = "main" if os.environ.get("POCKET3D_STANDIN_HY3DGEN_API") == "main" else "2.0.2"
FAIL_SIZE = (13, 13)
DELIGHT = "hunyuan3d-delight-v2-0"


class Hunyuan3DTexGenConfig:
    def __init__(self, light_remover_ckpt_path, multiview_ckpt_path, subfolder_name="hunyuan3d-paint-v2-0"):
        self.device = "cuda"
        self.light_remover_ckpt_path = light_remover_ckpt_path
        self.multiview_ckpt_path = multiview_ckpt_path
        self.candidate_camera_azims = [0, 90, 180, 270, 0, 180]
        self.candidate_camera_elevs = [0, 0, 0, 0, 90, -90]
        self.candidate_view_weights = [1, 0.1, 0.5, 0.1, 0.05, 0.05]
        self.render_size = 2048
        self.texture_size = 2048
        self.bake_exp = 4
        self.merge_method = "fast"
        self.pipe_name = subfolder_name


class _MeshRender:
    """Only the settings and the mesh/texture hand-over of differentiable_renderer/mesh_render.py's MeshRender."""

    def __init__(self, default_resolution=1024, texture_size=1024):
        self.set_default_render_resolution(default_resolution)
        self.set_default_texture_resolution(texture_size)
        self.bake_unreliable_kernel_size = int((2 / 512) * max(self.default_resolution))
        self.mesh_copy = None
        self.tex = None

    def set_default_render_resolution(self, default_resolution):
        if isinstance(default_resolution, int):
            default_resolution = (default_resolution, default_resolution)
        self.default_resolution = default_resolution

    def set_default_texture_resolution(self, texture_size):
        if isinstance(texture_size, int):
            texture_size = (texture_size, texture_size)
        self.texture_size = texture_size

    def load_mesh(self, mesh):
        self.mesh_copy = mesh

    def set_texture(self, tex):
        self.tex = np.asarray(tex, dtype=np.float32)

    def save_mesh(self):
        texture = Image.fromarray((np.clip(self.tex, 0, 1) * 255).astype(np.uint8))
        material = trimesh.visual.texture.SimpleMaterial(image=texture, diffuse=(255, 255, 255))
        self.mesh_copy.visual = trimesh.visual.TextureVisuals(uv=self.mesh_copy.visual.uv, image=texture,
                                                              material=material)
        return self.mesh_copy


class _LightShadowRemover:
    def __init__(self, config):
        self.device = config.device

    def __call__(self, image):
        image = image.resize((512, 512))
        if image.mode == "RGBA":
            white = Image.new("RGB", image.size, (255, 255, 255))
            white.paste(image, mask=image.getchannel("A"))
            image = white
        return image.convert("RGB")


class _MultiviewDiffusionNet:
    def __init__(self, config):
        self.device = config.device
        self.view_size = 512

    def __call__(self, input_images, control_images, camera_info):
        if not isinstance(input_images, list):
            input_images = [input_images]
        pixels = np.concatenate([np.asarray(img.convert("RGB")).reshape(-1, 3) for img in input_images])
        # the object is what the delight step did not turn white
        shown = pixels[pixels.sum(axis=1) < 3 * 250]
        colour = tuple(int(c) for c in (shown if len(shown) else pixels).mean(axis=0))
        return [Image.new("RGB", (self.view_size, self.view_size), colour) for _ in range(len(control_images) // 2)]


class Hunyuan3DPaintPipeline:
    if API == "main":
        @classmethod
        def from_pretrained(cls, model_path, subfolder="hunyuan3d-paint-v2-0-turbo"):
            record("hy3dgen.texgen.from_pretrained", model_path=model_path, subfolder=subfolder, api=API)
            return cls(Hunyuan3DTexGenConfig(*_folders(model_path, subfolder), subfolder))
    else:
        @classmethod
        def from_pretrained(cls, model_path):
            record("hy3dgen.texgen.from_pretrained", model_path=model_path, api=API)
            return cls(Hunyuan3DTexGenConfig(*_folders(model_path, "hunyuan3d-paint-v2-0")))

    def __init__(self, config):
        self.config = config
        self.models = {}
        self.render = _MeshRender(default_resolution=config.render_size, texture_size=config.texture_size)
        self.load_models()

    def load_models(self):
        self.models["delight_model"] = _LightShadowRemover(self.config)
        self.models["multiview_model"] = _MultiviewDiffusionNet(self.config)

    def enable_model_cpu_offload(self, gpu_id=None, device="cuda"):
        record("hy3dgen.texgen.enable_model_cpu_offload", gpu_id=gpu_id, device=str(device))

    def bake_from_multiview(self, views, camera_elevs, camera_azims, view_weights, method="graphcut"):
        height, width = self.render.texture_size
        weights = np.asarray(view_weights, dtype=np.float32)
        colours = np.stack([np.asarray(ImageStat.Stat(v.convert("RGB")).mean, dtype=np.float32) / 255
                            for v in views])
        colour = (colours * weights[:, None]).sum(axis=0) / weights.sum()
        texture = np.broadcast_to(colour, (height, width, 3)).copy()
        seen = np.ones((height, width, 1), dtype=bool)
        seen[: height // 8] = False  # a band "no view saw", left to the inpainting
        texture[~seen[..., 0]] = 0
        return texture, seen

    def texture_inpaint(self, texture, mask):
        texture = texture.copy()
        seen = mask > 0
        texture[~seen] = texture[seen].mean(axis=0)
        return texture

    def recenter_image(self, image, border_ratio=0.2):
        if image.mode == "RGB":
            return image
        if image.mode == "L":
            return image.convert("RGB")
        alpha = np.asarray(image)[:, :, 3]
        found = np.argwhere(alpha > 0)
        if found.size == 0:
            raise ValueError("Image is fully transparent")
        (top, left), (bottom, right) = found.min(axis=0), found.max(axis=0)
        return image.crop((left, top, right + 1, bottom + 1))

    def __call__(self, mesh, image):
        if API == "main":
            images = image if isinstance(image, list) else [image]
        else:
            images = [image]
        images = [Image.open(i) if isinstance(i, str) else i for i in images]
        for i in images:
            if i.size == FAIL_SIZE:
                raise RuntimeError("TEST STAND-IN hy3dgen.texgen: failing as asked (a 13 x 13 reference image)")
        prompts = [self.recenter_image(i) for i in images]
        prompts = [self.models["delight_model"](p) for p in prompts]

        if isinstance(mesh, trimesh.Scene):
            mesh = mesh.dump(concatenate=True)
        vmapping, indices, uvs = xatlas.parametrize(mesh.vertices, mesh.faces)
        mesh.vertices = mesh.vertices[vmapping]
        mesh.faces = indices
        mesh.visual.uv = uvs
        self.render.load_mesh(mesh)

        elevs, azims = self.config.candidate_camera_elevs, self.config.candidate_camera_azims
        weights = self.config.candidate_view_weights
        renders = [Image.new("RGB", (64, 64)) for _ in range(2 * len(azims))]  # normal + position maps
        camera_info = list(range(len(azims)))
        multiviews = self.models["multiview_model"](prompts if API == "main" else prompts[0], renders, camera_info)
        # the stand-in's views are one colour each: resizing one is a new image of that colour
        size = (self.config.render_size, self.config.render_size)
        multiviews = [Image.new(v.mode, size, v.getpixel((0, 0))) for v in multiviews]
        texture, mask = self.bake_from_multiview(multiviews, elevs, azims, weights, method=self.config.merge_method)
        mask_np = (mask.squeeze(-1) * 255).astype(np.uint8)
        texture = self.texture_inpaint(texture, mask_np)
        self.render.set_texture(texture)
        record("hy3dgen.texgen.__call__", api=API, faces=len(mesh.faces), images=len(images),
               image_modes=[i.mode for i in images], image_sizes=[list(i.size) for i in images],
               render_size=self.config.render_size, texture_size=self.config.texture_size,
               renderer_resolution=list(self.render.default_resolution),
               renderer_texture_size=list(self.render.texture_size),
               kernel_size=self.render.bake_unreliable_kernel_size, views=len(multiviews))
        return self.render.save_mesh()


def _folders(model_path, subfolder):
    if not os.path.exists(model_path):
        raise RuntimeError(f"Model path {model_path} not found")  # offline: no hub download in a stand-in
    delight, paint = os.path.join(model_path, DELIGHT), os.path.join(model_path, subfolder)
    for path in (delight, paint):
        if not os.path.exists(path):
            raise RuntimeError(f"Model path {path} not found")
    return delight, paint
