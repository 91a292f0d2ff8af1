"""TEST STAND-IN for ``textureGenPipeline`` of Hunyuan3D-2.1 (``hy3dpaint/textureGenPipeline.py`` in
Tencent-Hunyuan/Hunyuan3D-2.1); it computes nothing real: no diffusion, no upscaling, no rasterising. The
albedo it "paints" is the mean colour of the reference image's object; metallic is 0.25 and roughness 0.75
everywhere, so a test can tell the maps apart in the GLB.

It mimics what pocket3d's adapter uses, with the real names and signatures:

- ``Hunyuan3DPaintConfig(max_num_view, resolution)`` with the real attributes and defaults (``device``,
  ``multiview_cfg_path``, ``custom_pipeline``, ``multiview_pretrained_path``, ``dino_ckpt_path``,
  ``realesrgan_ckpt_path``, ``render_size`` 2048, ``texture_size`` 4096, ``max_selected_view_num``,
  ``resolution``, the candidate cameras);
- ``Hunyuan3DPaintPipeline(config)``, whose model loading fails as the real one does when the config's files are
  not there (``OmegaConf.load(multiview_cfg_path)``, ``custom_pipeline`` as a folder, the RealESRGAN checkpoint),
  with ``render`` (``set_default_texture_resolution``), ``view_processor`` (``bake_from_multiview``,
  ``texture_inpaint``) and ``models['multiview_model']``, ``models['super_model']``;
- ``pipeline(mesh_path, image_path, output_mesh_path, use_remesh, save_glb)``: remesh to
  ``white_mesh_remesh.obj`` beside the mesh (at most 40k faces), unwrap with xatlas, "paint" albedo and
  metallic-roughness views, "upscale", bake at ``texture_size``, inpaint, and write the OBJ as the real
  ``DifferentiableRenderer/mesh_utils.save_obj_mesh`` does with ``downsample=True``: ``<name>.obj``, ``<name>.mtl``
  (``map_Kd``, ``map_Pm``, ``map_Pr``), ``<name>.jpg``, ``<name>_metallic.jpg``, ``<name>_roughness.jpg`` at half the
  texture size. ``save_glb=True`` would need Blender: the stand-in only records it.

A reference image of exactly 13 x 13 pixels makes the call raise RuntimeError (the adapter's error path). Calls
are recorded with ``standin_calls.record`` as ``hy3dpaint.<entry>``.
"""

from __future__ import annotations

import os

import numpy as np
import trimesh
import xatlas
from PIL import Image, ImageStat
from standin_calls import record

FAIL_SIZE = (13, 13)
METALLIC, ROUGHNESS = 0.25, 0.75


class Hunyuan3DPaintConfig:
    def __init__(self, max_num_view, resolution):
        self.device = "cuda"
        self.multiview_cfg_path = "cfgs/hunyuan-paint-pbr.yaml"
        self.custom_pipeline = "hunyuanpaintpbr"
        self.multiview_pretrained_path = "tencent/Hunyuan3D-2.1"
        self.dino_ckpt_path = "facebook/dinov2-giant"
        self.realesrgan_ckpt_path = "ckpt/RealESRGAN_x4plus.pth"
        self.raster_mode = "cr"
        self.bake_mode = "back_sample"
        self.render_size = 1024 * 2
        self.texture_size = 1024 * 4
        self.max_selected_view_num = max_num_view
        self.resolution = resolution
        self.bake_exp = 4
        self.merge_method = "fast"
        self.candidate_camera_azims = [0, 90, 180, 270, 0, 180]
        self.candidate_camera_elevs = [0, 0, 0, 0, 90, -90]
        self.candidate_view_weights = [1, 0.1, 0.5, 0.1, 0.05, 0.05]
        for azim in range(0, 360, 30):
            for elev in (20, -20):
                self.candidate_camera_azims.append(azim)
                self.candidate_camera_elevs.append(elev)
                self.candidate_view_weights.append(0.01)


class _MeshRender:
    def __init__(self, default_resolution=1024, texture_size=1024):
        self.set_default_render_resolution(default_resolution)
        self.set_default_texture_resolution(texture_size)

    def set_default_render_resolution(self, default_resolution):
        if isinstance(default_resolution, int):
            default_resolution = (default_resolution, default_resolution)
        self.default_resolution = default_resolution

    def set_default_texture_resolution(self, texture_size):
        if isinstance(texture_size, int):
            texture_size = (texture_size, texture_size)
        self.texture_size = texture_size

    def load_mesh(self, mesh):
        self.mesh = mesh

    def set_texture(self, tex, force_set=False):
        self.tex = tex

    def set_texture_mr(self, mr, force_set=False):
        self.tex_mr = mr

    def save_mesh(self, mesh_path, downsample=False):
        base, name = os.path.splitext(mesh_path)[0], os.path.basename(os.path.splitext(mesh_path)[0])
        mesh = self.mesh
        with open(mesh_path, "w") as f:
            f.write(f"mtllib {name}.mtl\no {name}\n")
            np.savetxt(f, mesh.vertices, fmt="v %.6f %.6f %.6f")
            np.savetxt(f, mesh.visual.uv, fmt="vt %.6f %.6f")
            f.write("s 0\nusemtl Material\n")
            # each corner names its position and its UV: the same index here, as after xatlas
            f.write("".join(f"f {a}/{a} {b}/{b} {c}/{c}\n" for a, b, c in mesh.faces + 1))
        tex, mr = self.tex, self.tex_mr
        if downsample:
            tex, mr = tex[::2, ::2], mr[::2, ::2]
        Image.fromarray((tex * 255).astype(np.uint8)).save(f"{base}.jpg")
        Image.fromarray((np.repeat(mr[..., :1], 3, axis=2) * 255).astype(np.uint8)).convert("L").save(
            f"{base}_metallic.jpg")
        Image.fromarray((np.repeat(mr[..., 1:2], 3, axis=2) * 255).astype(np.uint8)).convert("L").save(
            f"{base}_roughness.jpg")
        with open(f"{base}.mtl", "w") as f:
            f.write(f"newmtl Material\nKd 0.800 0.800 0.800\nKe 0.000 0.000 0.000\nNi 1.5\nd 1.0\nillum 2\n"
                    f"map_Kd {name}.jpg\nmap_Pm {name}_metallic.jpg\nmap_Pr {name}_roughness.jpg\n")


class _ViewProcessor:
    def __init__(self, config, render):
        self.config, self.render = config, render

    def bake_view_selection(self, candidate_camera_elevs, candidate_camera_azims, candidate_view_weights,
                            max_selected_view_num):
        n = max_selected_view_num
        return candidate_camera_elevs[:n], candidate_camera_azims[:n], candidate_view_weights[:n]

    def bake_from_multiview(self, views, camera_elevs, camera_azims, view_weights):
        height, width = self.render.texture_size
        colour = np.stack([_mean_colour(v) for v in views]).mean(axis=0)
        texture = np.broadcast_to(colour, (height, width, 3)).copy()
        seen = np.ones((height, width, 1), dtype=bool)
        seen[: height // 8] = False
        texture[~seen[..., 0]] = 0
        return texture, seen

    def texture_inpaint(self, texture, mask, defualt=None):
        texture = texture.copy()
        seen = mask > 0
        texture[~seen] = texture[seen].mean(axis=0)
        return texture


class _MultiviewDiffusionNet:
    def __init__(self, config):
        if not os.path.isfile(config.multiview_cfg_path):  # the real one: OmegaConf.load(cfg_path)
            raise FileNotFoundError(f"[Errno 2] No such file or directory: '{config.multiview_cfg_path}'")
        if not os.path.isdir(config.custom_pipeline):  # the real one: DiffusionPipeline(custom_pipeline=...)
            raise OSError(f"custom pipeline {config.custom_pipeline} not found")
        record("hy3dpaint.multiviewDiffusionNet", multiview_pretrained_path=config.multiview_pretrained_path,
               dino_ckpt_path=config.dino_ckpt_path, device=config.device,
               custom_pipeline=config.custom_pipeline, multiview_cfg_path=config.multiview_cfg_path)

    def __call__(self, images, conditions, prompt=None, custom_view_size=None, resize_input=False):
        size = custom_view_size or 512
        pixels = np.concatenate([np.asarray(img.convert("RGB")).reshape(-1, 3) for img in images])
        shown = pixels[pixels.sum(axis=1) < 3 * 250]
        colour = tuple(int(c) for c in (shown if len(shown) else pixels).mean(axis=0))
        mr = (int(METALLIC * 255), int(ROUGHNESS * 255), 0)  # as MeshRender.get_texture_mr reads them back
        views = len(conditions) // 2
        return {"albedo": [Image.new("RGB", (size, size), colour) for _ in range(views)],
                "mr": [Image.new("RGB", (size, size), mr) for _ in range(views)]}


class _ImageSuperNet:
    def __init__(self, config):
        if not os.path.isfile(config.realesrgan_ckpt_path):  # the real RealESRGANer loads it with torch.load
            raise FileNotFoundError(f"[Errno 2] No such file or directory: '{config.realesrgan_ckpt_path}'")

    def __call__(self, image):
        return _resized(image, (image.width * 4, image.height * 4))


def _resized(view, size):
    """A painted view at another size: the stand-in's views are one colour, so a new image of that colour."""
    return Image.new(view.mode, size, view.getpixel((0, 0)))


def _mean_colour(view):
    return np.asarray(ImageStat.Stat(view.convert("RGB")).mean, dtype=np.float32) / 255


class Hunyuan3DPaintPipeline:
    def __init__(self, config=None) -> None:
        self.config = config if config is not None else Hunyuan3DPaintConfig(6, 512)
        self.models = {}
        self.stats_logs = {}
        self.render = _MeshRender(default_resolution=self.config.render_size, texture_size=self.config.texture_size)
        self.view_processor = _ViewProcessor(self.config, self.render)
        self.load_models()

    def load_models(self):
        self.models["super_model"] = _ImageSuperNet(self.config)
        self.models["multiview_model"] = _MultiviewDiffusionNet(self.config)

    def __call__(self, mesh_path=None, image_path=None, output_mesh_path=None, use_remesh=True, save_glb=True):
        image_prompt = Image.open(image_path) if isinstance(image_path, str) else image_path
        if image_prompt.size == FAIL_SIZE:
            raise RuntimeError("TEST STAND-IN textureGenPipeline: failing as asked (a 13 x 13 reference image)")
        path = os.path.dirname(mesh_path)
        if use_remesh:
            processed_mesh_path = os.path.join(path, "white_mesh_remesh.obj")
            remeshed = trimesh.load(mesh_path, force="mesh")
            if len(remeshed.faces) > 40000:
                remeshed = remeshed.simplify_quadric_decimation(face_count=40000)
            remeshed.export(processed_mesh_path)
        else:
            processed_mesh_path = mesh_path
        if output_mesh_path is None:
            output_mesh_path = os.path.join(path, "textured_mesh.obj")

        mesh = trimesh.load(processed_mesh_path, force="mesh")
        vmapping, indices, uvs = xatlas.parametrize(mesh.vertices, mesh.faces)
        mesh = trimesh.Trimesh(mesh.vertices[vmapping], indices, process=False,
                               visual=trimesh.visual.TextureVisuals(uv=uvs))
        self.render.load_mesh(mesh)

        elevs, azims, weights = self.view_processor.bake_view_selection(
            self.config.candidate_camera_elevs, self.config.candidate_camera_azims,
            self.config.candidate_view_weights, self.config.max_selected_view_num)
        conditions = [Image.new("RGB", (64, 64)) for _ in range(2 * len(azims))]
        style = image_prompt.resize((512, 512))
        if style.mode == "RGBA":
            white = Image.new("RGB", style.size, (255, 255, 255))
            white.paste(style, mask=style.getchannel("A"))
            style = white
        views = self.models["multiview_model"]([style.convert("RGB")], conditions, prompt="high quality",
                                               custom_view_size=self.config.resolution, resize_input=True)
        albedo = [self.models["super_model"](v) for v in views["albedo"]]
        mr = [self.models["super_model"](v) for v in views["mr"]]
        size = (self.config.render_size, self.config.render_size)
        albedo, mr = [_resized(v, size) for v in albedo], [_resized(v, size) for v in mr]
        texture, mask = self.view_processor.bake_from_multiview(albedo, elevs, azims, weights)
        texture_mr, mask_mr = self.view_processor.bake_from_multiview(mr, elevs, azims, weights)
        texture = self.view_processor.texture_inpaint(texture, (mask.squeeze(-1) * 255).astype(np.uint8))
        self.render.set_texture(texture, force_set=True)
        texture_mr = self.view_processor.texture_inpaint(texture_mr, (mask_mr.squeeze(-1) * 255).astype(np.uint8))
        self.render.set_texture_mr(texture_mr)
        self.render.save_mesh(output_mesh_path, downsample=True)
        record("hy3dpaint.__call__", mesh_path=mesh_path, image_path=image_path, output_mesh_path=output_mesh_path,
               use_remesh=use_remesh, save_glb=save_glb, image_mode=image_prompt.mode,
               max_num_view=self.config.max_selected_view_num, views=len(azims), resolution=self.config.resolution,
               render_size=self.config.render_size, texture_size=self.config.texture_size,
               renderer_texture_size=list(self.render.texture_size), faces=len(mesh.faces))
        return output_mesh_path
