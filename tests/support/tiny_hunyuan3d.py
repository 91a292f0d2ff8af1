"""Tiny random weights for Hunyuan3D-2's real shape pipeline (hy3dgen), built by the tests themselves.

TEST DOUBLE for downloaded weights, which cannot exist here: the folder has the layout of the real
``tencent/Hunyuan3D-2`` repository (``<subfolder>/config.yaml`` with the sections ``model``, ``vae``,
``conditioner``, ``scheduler`` and ``image_processor``, each ``{target, params}``, and
``<subfolder>/model.<variant>.safetensors`` whose keys are prefixed ``model.``, ``vae.`` and ``conditioner.``),
but a DiT, ShapeVAE and DINO conditioner of one layer and width 32. hy3dgen's own code builds and runs them.

Random weights give a random occupancy field, which may never cross zero; shifting the occupancy decoder's
output bias by the field's median makes the surface non-empty, so the pipeline reaches marching cubes and a mesh.
"""

from __future__ import annotations

from pathlib import Path

import yaml

SUBFOLDER = "hunyuan3d-dit-v2-0"
VARIANT = "fp16"
WIDTH = 32
EMBED = 8
LATENTS = 16
IMAGE_SIZE = 56  # the DINO encoder's input: 4 x 4 patches of 14 px


def config() -> dict:
    return {
        "model": {"target": "hy3dgen.shapegen.models.Hunyuan3DDiT", "params": {
            "in_channels": EMBED, "context_in_dim": WIDTH, "hidden_size": WIDTH, "mlp_ratio": 2.0,
            "num_heads": 2, "depth": 1, "depth_single_blocks": 1, "axes_dim": [WIDTH // 2], "theta": 10000,
            "qkv_bias": True, "guidance_embed": False}},
        "vae": {"target": "hy3dgen.shapegen.models.ShapeVAE", "params": {
            "num_latents": LATENTS, "embed_dim": EMBED, "width": WIDTH, "heads": 2, "num_decoder_layers": 1,
            "num_freqs": 4, "include_pi": False, "qkv_bias": False, "qk_norm": True, "scale_factor": 1.0}},
        "conditioner": {"target": "hy3dgen.shapegen.models.SingleImageEncoder", "params": {
            "main_image_encoder": {"type": "DinoImageEncoder", "kwargs": {
                "config": {"hidden_size": WIDTH, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "intermediate_size": 2 * WIDTH, "patch_size": 14, "image_size": IMAGE_SIZE,
                           "layerscale_value": 1.0, "mlp_ratio": 2},
                "image_size": IMAGE_SIZE, "use_cls_token": True}}}},
        "scheduler": {"target": "hy3dgen.shapegen.schedulers.FlowMatchEulerDiscreteScheduler",
                      "params": {"num_train_timesteps": 1000}},
        "image_processor": {"target": "hy3dgen.shapegen.preprocessors.ImageProcessorV2",
                            "params": {"size": 64, "border_ratio": 0.15}},
    }


def build(root: Path, seed: int = 0) -> Path:
    """Write the folder under ``root`` and return ``root`` (the path the adapter's ``weights`` option names)."""
    import torch
    from hy3dgen.shapegen.pipelines import instantiate_from_config
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    cfg = config()
    model = instantiate_from_config(cfg["model"])
    vae = instantiate_from_config(cfg["vae"])
    conditioner = instantiate_from_config(cfg["conditioner"])
    _centre_occupancy(vae)
    tensors = {}
    for prefix, module in (("model", model), ("vae", vae), ("conditioner", conditioner)):
        for key, value in module.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().contiguous().clone()
    folder = root / SUBFOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    save_file(tensors, str(folder / f"model.{VARIANT}.safetensors"))
    return root


def _centre_occupancy(vae) -> None:
    """Shift the decoder's output bias so half the probe points are inside: the surface is never empty."""
    import torch

    with torch.no_grad():
        latents = vae(torch.randn(1, LATENTS, EMBED))
        points = torch.rand(1, 4096, 3) * 2 - 1
        occupancy = vae.geo_decoder(queries=points, latents=latents)
        vae.geo_decoder.output_proj.bias -= occupancy.median()
