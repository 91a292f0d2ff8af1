"""TEST STAND-IN for ``hy3dshape.pipelines`` of Hunyuan3D-2.1 (``hy3dshape/hy3dshape/pipelines.py``); it computes
nothing real: no DiT, no VAE, no marching cubes. The "shape" is an icosphere.

It mimics ``Hunyuan3DDiTFlowMatchingPipeline``:

- ``from_pretrained(model_path, device='cuda', dtype=torch.float16, use_safetensors=False, variant='fp16',
  subfolder='hunyuan3d-dit-v2-1', **kwargs)``: like the real ``utils.smart_load_model``, a local ``model_path``
  holds ``<subfolder>/config.yaml`` and ``<subfolder>/model.<variant>.ckpt`` (``.safetensors`` with
  ``use_safetensors``); a missing file raises FileNotFoundError as there (offline there is no hub download);
- ``enable_flashvdm(enabled=True, adaptive_kv_selection=True, topk_mode='mean', mc_algo='mc', replace_vae=True)``;
- ``pipeline(image=..., num_inference_steps=50, ..., guidance_scale=5.0, generator=None, octree_resolution=384,
  num_chunks=8000, output_type='trimesh', enable_pbar=True, **kwargs)`` with ``callback``/``callback_steps``
  popped from kwargs and called as ``callback(step_idx, t, outputs)`` each step, returning a list of one trimesh.

An image of exactly 13 x 13 pixels makes the call raise RuntimeError (the adapter's error path). Calls are recorded
with ``standin_calls.record`` as ``hy3dshape.<entry>``.
"""

from __future__ import annotations

import os

import torch
import trimesh
from PIL import Image
from standin_calls import record

FAIL_SIZE = (13, 13)


class Hunyuan3DDiTFlowMatchingPipeline:
    @classmethod
    def from_pretrained(cls, model_path, device="cuda", dtype=torch.float16, use_safetensors=False, variant="fp16",
                        subfolder="hunyuan3d-dit-v2-1", **kwargs):
        base_dir = os.environ.get("HY3DGEN_MODELS", "~/.cache/hy3dgen")
        folder = os.path.expanduser(os.path.join(base_dir, model_path, subfolder))
        if not os.path.exists(folder):
            raise FileNotFoundError(f"Model path {model_path} not found")
        extension = "safetensors" if use_safetensors else "ckpt"
        ckpt = os.path.join(folder, f"model{'' if variant is None else '.' + variant}.{extension}")
        config = os.path.join(folder, "config.yaml")
        for path in (config, ckpt):
            if not os.path.exists(path):
                raise FileNotFoundError(f"Model file {path} not found")
        record("hy3dshape.from_pretrained", model_path=model_path, device=str(device), dtype=str(dtype),
               use_safetensors=use_safetensors, variant=variant, subfolder=subfolder)
        return cls(device=device, dtype=dtype)

    def __init__(self, device="cuda", dtype=torch.float16):
        self.device = torch.device(device)
        self.dtype = dtype

    def enable_flashvdm(self, enabled=True, adaptive_kv_selection=True, topk_mode="mean", mc_algo="mc",
                        replace_vae=True):
        record("hy3dshape.enable_flashvdm", enabled=enabled, mc_algo=mc_algo)

    def __call__(self, image=None, num_inference_steps=50, timesteps=None, sigmas=None, eta=0.0, guidance_scale=5.0,
                 generator=None, box_v=1.01, octree_resolution=384, mc_level=0.0, mc_algo=None, num_chunks=8000,
                 output_type="trimesh", enable_pbar=True, mask=None, **kwargs):
        callback = kwargs.pop("callback", None)
        callback_steps = kwargs.pop("callback_steps", None)
        if isinstance(image, str):
            image = Image.open(image)
        if image.size == FAIL_SIZE:
            raise RuntimeError("TEST STAND-IN hy3dshape: failing as asked (a 13 x 13 image)")
        record("hy3dshape.__call__", image_mode=image.mode, image_size=list(image.size),
               num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
               octree_resolution=octree_resolution, num_chunks=num_chunks, output_type=output_type,
               generator=type(generator).__name__, enable_pbar=enable_pbar)
        for i in range(num_inference_steps):
            if callback is not None and i % callback_steps == 0:
                callback(i, torch.tensor(1.0 - i / num_inference_steps), None)
        mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
        return [trimesh.Trimesh(mesh.vertices, mesh.faces)]
