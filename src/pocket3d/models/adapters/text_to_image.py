"""Text to one image with a diffusers pipeline (``pip install 'pocket3d[text-to-image]'``): the first stage of
text -> mesh when the mesh model takes images.

``diffusers.AutoPipelineForText2Image.from_pretrained(weights)`` picks the pipeline class from the folder's
``model_index.json`` (SDXL, SD 1.x/2.x, HunyuanDiT, ...). The prompt is wrapped in ``options.prompt_template``
(by default: one object, centred, on a plain white background, as image-to-3D models want their input), and
the picture is a downloadable output of the job (``text_to_image.png``). ``options.variant`` (``fp16``) picks the
weights' half-precision files, half the download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.adapters.base import WeightedModel, diffusers_step_end
from pocket3d.models.spec import InputRejected, ProgressFn, RunInputs

PROMPT_TEMPLATE = "a 3D render of {prompt}, a single object, centred, full view, plain white background"
NEGATIVE_PROMPT = "multiple objects, cropped, cut off, text, watermark, busy background, shadow"


class TextToImageParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(None, ge=1, le=150)
    guidance_scale: float | None = Field(None, ge=0, le=30)
    size: int | None = Field(None, ge=32, le=2048, description="width and height in pixels (a multiple of 8)")
    negative_prompt: str | None = Field(None, max_length=1000)


class DiffusersTextToImageModel(WeightedModel):
    Params = TextToImageParams
    requires: ClassVar[tuple[str, ...]] = ("torch", "diffusers", "transformers")
    default_weights = "stabilityai/stable-diffusion-xl-base-1.0"
    weight_files = ("model_index.json",)
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "low": {"steps": 20, "guidance_scale": 7.0, "size": 768},
        "medium": {"steps": 30, "guidance_scale": 7.0, "size": 1024},
        "high": {"steps": 40, "guidance_scale": 7.0, "size": 1024},
    }

    def build(self) -> Any:
        from diffusers import AutoPipelineForText2Image

        extra = {"variant": self.spec.options["variant"]} if self.spec.options.get("variant") else {}
        pipeline = AutoPipelineForText2Image.from_pretrained(self.weights, torch_dtype=self.dtype, **extra)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline.to(self.torch_device)

    def run(self, inputs: RunInputs, params: TextToImageParams, progress: ProgressFn) -> dict[str, Path]:
        if not inputs.text:
            raise InputRejected("text to image needs a text prompt")
        knobs = self.settings(params, inputs.quality)
        size = max(8, int(knobs["size"]) // 8 * 8)
        template = str(self.spec.options.get("prompt_template", PROMPT_TEMPLATE))
        progress(0.02, "drawing the prompt")
        with self.one_call() as pipeline:
            result = pipeline(
                prompt=template.format(prompt=inputs.text),
                negative_prompt=knobs.get("negative_prompt") or self.spec.options.get("negative_prompt",
                                                                                     NEGATIVE_PROMPT),
                num_inference_steps=knobs["steps"], guidance_scale=knobs["guidance_scale"], height=size,
                width=size, generator=self.generator(inputs.seed),
                callback_on_step_end=diffusers_step_end(progress, knobs["steps"], 0.05, 0.95))
        dest = inputs.work_dir / "view.png"
        result.images[0].save(dest)
        return {"image": dest}
