"""Built-in background removal: the ``remove_background`` stage before the models that want the object cut out.

- ``builtin_u2netp``: U²-Netp (Qin et al., 2020; Apache-2.0), a 4.6 MB salient-object network, through
  onnxruntime on the CPU. At ``quality: high`` it uses the full U²-Net (176 MB) when that has been fetched
  (``pocket3d weights fetch u2net``). Unavailable until ``pocket3d weights fetch`` (``make weights``) has put
  its weights in the weights folder (``pocket3d.models.weights``).
- ``builtin_grabcut``: OpenCV's GrabCut seeded from the border colour; no weights. The fallback, listed after it.

Both pass an image that already is a cut-out (its alpha separates an object from a clear background) through as
it is, and write RGBA PNGs: the images the next stage gets and the job's ``remove_background.png``.

Measured on the shared test images composited on noisy backgrounds (bench/cutout.py): see the README.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
from PIL import Image

from pocket3d.errors import WarningCode
from pocket3d.models import weights
from pocket3d.models.builtin import builtin_spec
from pocket3d.models.builtin.image_to_mesh import foreground_mask, read_image
from pocket3d.models.spec import (
    Device,
    Feature,
    InputRejected,
    ModelAdapter,
    ModelSpec,
    NoParams,
    ProgressFn,
    RunInputs,
    warn,
)

INPUT_SIZE = 320  # both networks take 320 x 320
MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet statistics, as the networks were trained
STD = np.array([0.229, 0.224, 0.225], np.float32)


def is_cutout(rgba: np.ndarray) -> bool:
    """True when the alpha already separates an object from a background (some pixels clear, some not)."""
    clear = float((rgba[:, :, 3] < 16).mean())
    return 0.01 < clear < 0.99


class _CutoutModel(ModelAdapter):
    """What both models share: each image cut out in turn, written as an RGBA PNG."""

    def mask(self, rgb: np.ndarray, quality: str, progress: ProgressFn) -> np.ndarray:
        """Alpha, 0-255, at the image's size. ``progress`` takes fractions of this image's share of the stage;
        it is the stage's own callback, so ``warn`` works on it."""
        raise NotImplementedError

    def run(self, inputs: RunInputs, params: NoParams, progress: ProgressFn) -> dict[str, Path]:
        if not inputs.images:
            raise InputRejected("background removal needs an image")
        out: dict[str, Path] = {}
        n = len(inputs.images)
        for i, path in enumerate(inputs.images):
            step = _ImageSteps(progress, i, n)
            step(0.0, "reading the image")
            rgba = read_image(path, f"image {i + 1}")
            if is_cutout(rgba):
                step(0.5, "the image is cut out already (its alpha separates the object): kept as it is")
            else:
                rgba = rgba.copy()
                rgba[:, :, 3] = self.mask(rgba[:, :, :3], inputs.quality, step)
                if not is_cutout(rgba):
                    raise InputRejected(f"no object found in image {i + 1}: the background covers all of it or none")
            step(0.95, "writing the cut-out")
            dest = inputs.work_dir / (f"cutout-{i}.png" if n > 1 else "cutout.png")
            Image.fromarray(rgba).save(dest)
            out[f"image{i}" if n > 1 else "image"] = dest
        return out


class _ImageSteps:
    """The stage's progress for image ``i`` of ``n``: a fraction of that image's work, its message naming the image
    when there are several. ``warn`` reaches the stage's callback."""

    def __init__(self, progress: ProgressFn, i: int, n: int):
        self.progress, self.i, self.n = progress, i, n
        self.warn = getattr(progress, "warn", None)

    def __call__(self, fraction: float, message: str | None) -> None:
        if message is not None and self.n > 1:
            message = f"{message} (image {self.i + 1} of {self.n})"
        self.progress((self.i + fraction) / self.n, message)


class U2NetCutoutModel(_CutoutModel):
    """U²-Netp through onnxruntime (U²-Net at quality high, when fetched)."""

    requires: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    default_spec = builtin_spec(
        "builtin_u2netp", Feature.BACKGROUND_REMOVAL, {"image", "multiview"}, ("png",),
        "U²-Netp (4.6 MB ONNX, Apache-2.0) on the CPU: cuts the object out for the models that want it so; U²-Net "
        "at quality high when fetched", vram_requirement=512)

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self._sessions: dict[str, Any] = {}

    @classmethod
    def unavailable_reasons(cls, spec: ModelSpec) -> list[str]:
        reasons = super().unavailable_reasons(spec)
        missing = weights.missing_reason("u2netp")
        return reasons + [missing] if missing else reasons

    def load(self, device: Device) -> None:
        super().load(device)
        self._session("u2netp")

    def unload(self) -> None:
        self._sessions.clear()
        super().unload()

    def _session(self, name: str) -> Any:
        if name not in self._sessions:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise
            self._sessions[name] = ort.InferenceSession(str(weights.path_of(name)), options,
                                                        providers=["CPUExecutionProvider"])
        return self._sessions[name]

    def mask(self, rgb: np.ndarray, quality: str, progress: ProgressFn) -> np.ndarray:
        name = "u2netp"
        if quality == "high":
            if weights.missing_reason("u2net") is None:
                name = "u2net"
            else:
                warn(progress, WarningCode.CUTOUT_FALLBACK, "quality high cuts out with U²-Net, whose weights are "
                     "not fetched here (`pocket3d weights fetch u2net`, 176 MB): U²-Netp did it instead")
        return u2net_alpha(self._session(name), rgb, progress, "U²-Net" if name == "u2net" else "U²-Netp")


class GrabCutModel(_CutoutModel):
    """OpenCV's GrabCut, seeded from the border colour; no weights."""

    default_spec = builtin_spec(
        "builtin_grabcut", Feature.BACKGROUND_REMOVAL, {"image", "multiview"}, ("png",),
        "OpenCV GrabCut seeded from the border colour: the cut-out when U²-Netp's weights are not fetched")

    def mask(self, rgb: np.ndarray, quality: str, progress: ProgressFn) -> np.ndarray:
        if U2NetCutoutModel.unavailable_reasons(U2NetCutoutModel.default_spec):
            # GrabCut stands in for U²-Netp: say so, it is weaker on a busy background. (The reasons name server
            # paths, which the job shows to every caller: `pocket3d models` gives them to the operator.)
            warn(progress, WarningCode.CUTOUT_FALLBACK, "the background was removed with GrabCut, the fallback: "
                 "U²-Netp cannot run on this server (`pocket3d weights fetch` gets its weights; `pocket3d models` "
                 "says what else it lacks), and GrabCut misses more of the object on a busy background")
        opaque = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        try:
            found = foreground_mask(opaque, progress=progress)
        except InputRejected:
            return np.zeros(rgb.shape[:2], np.uint8)
        return np.where(found, 255, 0).astype(np.uint8)


def u2net_alpha(session: Any, rgb: np.ndarray, progress: ProgressFn | None = None,
                label: str = "U²-Netp") -> np.ndarray:
    """The network's saliency map as alpha (0-255) at the image's size, kept to the largest object (a noisy
    background leaves specks) with its soft edge."""
    h, w = rgb.shape[:2]
    step = progress or (lambda fraction, message: None)
    step(0.1, f"finding the object with {label} ({INPUT_SIZE}×{INPUT_SIZE})")
    x = np.asarray(Image.fromarray(rgb).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.LANCZOS), np.float32)
    x = (x / max(float(x.max()), 1e-6) - MEAN) / STD
    feed = {session.get_inputs()[0].name: x.transpose(2, 0, 1)[None]}
    saliency = session.run(None, feed)[0][0, 0]  # the fused side output
    saliency = (saliency - saliency.min()) / max(float(saliency.max() - saliency.min()), 1e-6)
    step(0.7, f"scaling the mask back to {w}×{h}")
    alpha = cv2.resize(saliency, (w, h), interpolation=cv2.INTER_LINEAR)
    step(0.8, "keeping the largest object")
    keep = _largest_region(alpha > 0.5)
    keep = cv2.dilate(keep.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # the soft edge around it
    return np.where(keep, np.clip(alpha * 255, 0, 255), 0).astype(np.uint8)


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of ``mask`` (its holes stay: a mug's handle is not part of the mug)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
