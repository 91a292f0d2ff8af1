"""Background removal with rembg (``pip install 'pocket3d[rembg]'``): the stage before image models that want the
object cut out (``cutout: true``).

``rembg.new_session(model_name)`` loads ``<model_name>.onnx`` from rembg's model folder, which
``options.weights`` names (it becomes ``U2NET_HOME`` in the worker). By default that is pocket3d's weights folder
and the session ``u2netp``: the file ``pocket3d weights fetch`` puts there (byte-identical to the one rembg would
download), which the built-in ``builtin_u2netp`` uses too. For another session (``options.session``) rembg
downloads the file on the first load when it is missing and the machine is online. The stage writes the cut-out as an RGBA PNG: a downloadable
output of the job (``remove_background.png``) and the image the next stage gets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models import weights as known_weights
from pocket3d.models.adapters.base import WeightedModel, has_alpha_cutout, hub_offline, rgba_image
from pocket3d.models.spec import InputRejected, ModelSpec, ProgressFn, RunInputs


class RembgParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha_matting: bool = Field(False, description="refine the edge with alpha matting (slower)")
    post_process_mask: bool = Field(True, description="smooth the mask's edge")
    keep_existing_alpha: bool = Field(True, description="an image that is already a cut-out passes as it is")


class RembgModel(WeightedModel):
    Params = RembgParams
    requires: ClassVar[tuple[str, ...]] = ("rembg", "onnxruntime")

    @classmethod
    def weights_reasons(cls, spec: ModelSpec) -> list[str]:
        folder = _model_dir(spec)
        onnx = folder / f"{_session_name(spec)}.onnx"
        if onnx.exists():
            return []
        if "weights" not in spec.options and _session_name(spec) in known_weights.KNOWN:
            return [known_weights.missing_reason(_session_name(spec)) or f"{onnx} is missing"]
        if "weights" in spec.options and not folder.exists():
            return [f"weights not found at {folder}"]
        if hub_offline():
            return [f"{onnx} is missing and HF_HUB_OFFLINE is set, so rembg cannot download it"]
        return []

    def build(self) -> Any:
        os.environ["U2NET_HOME"] = str(_model_dir(self.spec))  # rembg reads it when the session is made
        import rembg

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.torch_device.startswith("cuda") \
            else ["CPUExecutionProvider"]
        return rembg.new_session(_session_name(self.spec), providers=providers)

    def run(self, inputs: RunInputs, params: RembgParams, progress: ProgressFn) -> dict[str, Path]:
        import rembg

        cutouts = []
        for i, path in enumerate(inputs.images):
            image = rgba_image(path)
            progress(i / max(1, len(inputs.images)), f"removing the background of image {i + 1}")
            if not (params.keep_existing_alpha and has_alpha_cutout(image)):
                with self.one_call() as session:
                    image = rembg.remove(image.convert("RGB"), session=session, alpha_matting=params.alpha_matting,
                                         post_process_mask=params.post_process_mask)
            if not has_alpha_cutout(image):
                raise InputRejected(f"no object found in image {i + 1}: the background covers all of it or none")
            dest = inputs.work_dir / (f"cutout-{i}.png" if len(inputs.images) > 1 else "cutout.png")
            image.save(dest)
            cutouts.append(dest)
        if not cutouts:
            raise InputRejected("background removal needs an image")
        return {"image": cutouts[0]} if len(cutouts) == 1 else {f"image{i}": p for i, p in enumerate(cutouts)}


def _session_name(spec: ModelSpec) -> str:
    return str(spec.options.get("session", "u2netp"))


def _model_dir(spec: ModelSpec) -> Path:
    if "weights" in spec.options:
        return Path(str(spec.options["weights"])).expanduser()
    return known_weights.weights_dir()
