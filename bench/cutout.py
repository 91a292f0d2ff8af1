"""Background removal: U²-Netp (and U²-Net, when fetched) against the GrabCut fallback, on the shared test images.

    .venv/bin/python bench/cutout.py [--seed N]

The test images are cut-outs already (their alpha is the object), so each is composited onto a background drawn
with a fixed seed, and the models see only the RGB: "noise" (every pixel a random colour), "grain" (a plain
colour, a gradient and strong per-pixel noise: a noisy photo backdrop, where GrabCut's border-colour seed is at
its best) and "clutter" (saturated blotches of colour: a busy scene). The mask a
model returns (alpha > 127) is compared with the image's own alpha (> 127): intersection over union. The time is
the mask alone, after the model is loaded, on this machine's CPU. Needs `pocket3d weights fetch` (make weights).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pocket3d.models import weights
from pocket3d.models.builtin.cutout import GrabCutModel, U2NetCutoutModel
from pocket3d.models.spec import Device

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "testdata" / "images"


def noise_background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Every pixel an independent uniform random colour: pure noise, no backdrop colour to seed from."""
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def grain_background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A plain colour with a gentle gradient and strong grain (sigma 30): a noisy photo backdrop."""
    base = rng.uniform(60, 200, 3).astype(np.float32)
    ramp = np.linspace(-25, 25, w, dtype=np.float32)[None, :, None] * rng.choice([-1, 1], 3)
    return np.clip(base + ramp + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def clutter_background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Saturated blotches of colour at three scales plus grain: a busy scene, harder than any backdrop."""
    field = np.zeros((h, w, 3), np.float32)
    for cells in (4, 12, 40):
        coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        field += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) / 3
    field += rng.normal(0, 25, (h, w, 3))
    return np.clip(field, 0, 255).astype(np.uint8)


BACKGROUNDS = {"noise": noise_background, "grain": grain_background, "clutter": clutter_background}


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255
    return (rgba[:, :, :3] * alpha + background * (1 - alpha)).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if weights.missing_reason("u2netp"):
        print(weights.missing_reason("u2netp"), file=sys.stderr)
        return 1
    cpu = Device("cpu", "cpu", "CPU", 0)
    methods: dict[str, tuple[object, str]] = {}
    u2net = U2NetCutoutModel(U2NetCutoutModel.default_spec)
    u2net.load(cpu)
    methods["U²-Netp"] = (u2net, "medium")
    if weights.missing_reason("u2net") is None:
        methods["U²-Net"] = (u2net, "high")
    methods["GrabCut"] = (GrabCutModel(GrabCutModel.default_spec), "medium")
    for model, quality in methods.values():  # warm up: the first run builds the session's kernels
        model.mask(np.zeros((64, 64, 3), np.uint8), quality, lambda *_: None)

    rng = np.random.default_rng(args.seed)
    names = list(methods)
    for kind, draw in BACKGROUNDS.items():
        rows: list[tuple[str, dict[str, tuple[float, float]]]] = []
        for path in sorted(IMAGES.glob("*.png")):
            with Image.open(path) as im:
                rgba = np.array(im.convert("RGBA"))
            truth = rgba[:, :, 3] > 127
            rgb = composite(rgba, draw(*rgba.shape[:2], rng))
            found = {}
            for name, (model, quality) in methods.items():
                start = time.perf_counter()
                alpha = model.mask(rgb, quality, lambda *_: None)
                found[name] = (iou(alpha > 127, truth), time.perf_counter() - start)
            rows.append((f"{path.name} ({rgba.shape[1]}x{rgba.shape[0]})", found))
        print(f"\nbackground: {kind} ({draw.__doc__.strip()})")
        print(f"{'image':<44}" + "".join(f"{n + ' IoU':>14}{n + ' s':>12}" for n in names))
        for label, found in rows:
            print(f"{label:<44}" + "".join(f"{found[n][0]:>14.3f}{found[n][1]:>12.2f}" for n in names))
        print(f"{'mean':<44}" + "".join(f"{statistics.mean(f[n][0] for _, f in rows):>14.3f}"
                                        f"{statistics.mean(f[n][1] for _, f in rows):>12.2f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
