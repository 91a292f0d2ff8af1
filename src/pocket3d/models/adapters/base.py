"""What the adapters for the real models share.

- **Weights** come from ``options.weights`` in models.yaml: a local folder (an absolute path, or ``~``/``./``,
  relative to the server's working directory) or a
  Hugging Face hub id, with the adapter's ``default_weights`` (the official hub id) when the option is absent. A
  local folder that is missing, or lacks the files the adapter names in ``weight_files``, makes the model
  unavailable with that reason; so does a hub id that is not in the local cache while ``HF_HUB_OFFLINE`` is set
  (otherwise the library downloads it on the first load).
- **Source checkouts**: libraries that are not on PyPI (TRELLIS, Hunyuan3D-2.1, UniRig, ...) are found through
  ``options.source``, a folder put on ``sys.path`` before their import, and named in the unavailable reason.
- **torch**: the device the scheduler placed the model on, float16 on CUDA and float32 on the CPU (half
  precision fails there) unless ``options.dtype`` says otherwise, a seeded generator, and memory handed back on
  unload (garbage collected, CUDA cache emptied). The device worker measures each stage's peak itself (torch's
  reserved memory plus what NVML sees) and reports it to the scheduler, so adapters need not.
- **One call at a time**: a loaded pipeline keeps per-call state (hy3dgen's scheduler step counter, see
  MODEL-FACTS.md), so ``run`` holds the adapter's lock even when models.yaml sets ``max_concurrent`` above 1.
- **Quality presets**: ``presets`` maps low/medium/high to the model's own knobs; models.yaml may override them
  per model (``options.presets``), and a parameter the client sets wins over both.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from pocket3d.models.spec import Device, InputRejected, ModelAdapter, ModelSpec, ProgressFn, RunInputs

QUALITIES = ("low", "medium", "high")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def is_local(weights: str) -> bool:
    return weights.startswith(("/", "./", "../", "~"))


def hub_cached(repo_id: str, filename: str | None) -> bool:
    """True when the local Hugging Face cache holds ``filename`` of ``repo_id`` (any of it, without a name)."""
    try:
        from huggingface_hub import scan_cache_dir, try_to_load_from_cache
    except ImportError:
        return False
    if filename:
        found = try_to_load_from_cache(repo_id, filename)
        return isinstance(found, str)
    try:
        return any(repo.repo_id == repo_id for repo in scan_cache_dir().repos)
    except Exception:  # noqa: BLE001 - no cache directory yet is "not cached"
        return False


class WeightedModel(ModelAdapter):
    """Base for adapters that load weights and run a library's pipeline. Subclasses implement ``build`` (return
    the loaded pipeline) and ``run``; ``self.pipeline`` holds what ``build`` returned while loaded."""

    requires: ClassVar[tuple[str, ...]] = ("torch",)
    default_weights: ClassVar[str | None] = None  # the official hub id
    weight_files: ClassVar[tuple[str, ...]] = ()  # relative to the weights folder; the first is the cache probe
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.pipeline: Any = None
        self._call_lock = threading.Lock()
        add_source_paths(spec)

    @classmethod
    def warm(cls, spec: ModelSpec) -> None:
        add_source_paths(spec)  # as the constructor will: a checkout's packages import from there
        super().warm(spec)

    # -- availability -----------------------------------------------------------------------------------------

    @classmethod
    def unavailable_reasons(cls, spec: ModelSpec) -> list[str]:
        reasons = source_reasons(spec)
        with source_on_path(spec):
            reasons += [f"python package {p!r} is not installed" for p in cls.requires if not _findable(p)]
        reasons += cls.weights_reasons(spec)
        return reasons

    @classmethod
    def weights_reasons(cls, spec: ModelSpec) -> list[str]:
        weights = spec.options.get("weights", cls.default_weights)
        if not weights:
            return ["options.weights is not set: name a local folder or a hub id"]
        files = [f.format(**spec.options) if "{" in f else f for f in cls.required_files(spec)]
        if is_local(str(weights)):
            root = Path(str(weights)).expanduser().resolve()
            if not root.exists():
                return [f"weights not found at {root}"]
            missing = [f for f in files if not (root / f).exists()]
            return [f"weights at {root} lack {', '.join(missing)}"] if missing else []
        if hub_offline() and not hub_cached(str(weights), files[0] if files else None):
            return [(f"weights {weights!r} are not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
                     "download them first or point options.weights at a local folder")]
        return []

    @classmethod
    def required_files(cls, spec: ModelSpec) -> tuple[str, ...]:
        return cls.weight_files

    # -- loading ----------------------------------------------------------------------------------------------

    @property
    def weights(self) -> str:
        weights = str(self.spec.options.get("weights", self.default_weights))
        # Absolute, so a library never mistakes "models/x" for a hub id or its own cache's sub-folder.
        return str(Path(weights).expanduser().resolve()) if is_local(weights) else weights

    def load(self, device: Device) -> None:
        self.device = device
        try:
            self.pipeline = self.build()
        except BaseException:
            self.pipeline = None
            release_memory()
            raise

    def build(self) -> Any:
        raise NotImplementedError

    def unload(self) -> None:
        self.pipeline = None
        self.device = None
        release_memory()

    # -- running ----------------------------------------------------------------------------------------------

    @property
    def torch_device(self) -> str:
        # In a GPU's worker process CUDA_VISIBLE_DEVICES shows that one GPU, so Device.id is already "cuda:0".
        return self.device.id if self.device is not None and self.device.kind == "cuda" else "cpu"

    @property
    def dtype(self) -> Any:
        import torch

        named = self.spec.options.get("dtype")
        if named:
            return getattr(torch, str(named))
        return torch.float16 if self.torch_device.startswith("cuda") else torch.float32

    def generator(self, seed: int | None) -> Any:
        import torch

        gen = torch.Generator(device=self.torch_device)
        # A drawn seed comes from the OS, not torch.seed(), which would reseed the process-wide generator.
        return gen.manual_seed(int(seed) if seed is not None else secrets.randbits(32))

    def settings(self, params: BaseModel, quality: str) -> dict[str, Any]:
        """The model's knobs for this call: the quality preset, models.yaml's override of it, then the client's
        parameters (those it set)."""
        chosen = quality if quality in QUALITIES else "medium"
        merged = dict(self.presets.get(chosen, {}))
        merged.update(self.spec.options.get("presets", {}).get(chosen, {}))
        merged.update({k: v for k, v in params.model_dump().items() if v is not None})
        return merged

    @contextmanager
    def one_call(self) -> Iterator[Any]:
        """The loaded pipeline, held by this call alone."""
        with self._call_lock:
            if self.pipeline is None:
                raise RuntimeError(f"model {self.spec.id!r} is not loaded")
            yield self.pipeline


def steps_callback(progress: ProgressFn, total: int, start: float = 0.05, end: float = 0.9,
                   message: str = "sampling") -> Callable[..., None]:
    """``callback(step, ...)`` for a diffusion loop: moves progress from ``start`` to ``end``, and stops the loop
    (StageCancelled raised from ``progress``) when the job is cancelled."""
    total = max(1, int(total))

    def on_step(step: int, *_: Any, **__: Any) -> None:
        done = min(int(step) + 1, total)
        progress(start + (end - start) * done / total, f"{message}: step {done}/{total}")

    return on_step


def diffusers_step_end(progress: ProgressFn, total: int, start: float = 0.05, end: float = 0.9,
                       message: str = "sampling") -> Callable[[Any, int, Any, dict], dict]:
    """diffusers' ``callback_on_step_end(pipe, step, timestep, kwargs)``, which must hand ``kwargs`` back."""
    on_step = steps_callback(progress, total, start, end, message)

    def step_end(pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        on_step(step)
        return kwargs

    return step_end


def release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def rgba_image(path: Path) -> Any:
    """The image as a PIL RGBA image, upright as its EXIF says."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGBA")


def has_alpha_cutout(image: Any) -> bool:
    """True when the RGBA image's alpha separates an object from a background (some pixels clear, some not)."""
    import numpy as np

    alpha = np.asarray(image.getchannel("A"))
    clear = float((alpha < 16).mean())
    return 0.01 < clear < 0.99


def only_image(inputs: RunInputs, model: str) -> Path:
    if len(inputs.images) != 1:
        raise InputRejected(f"{model} takes exactly one image, got {len(inputs.images)}")
    return inputs.images[0]


def write_glb(mesh: Any, work_dir: Path, name: str = "mesh.glb") -> Path:
    """Write a trimesh mesh or scene as GLB; an empty result is the model's failure, said plainly."""
    import trimesh

    if isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) == 0:
        raise RuntimeError("the model produced an empty mesh")
    if isinstance(mesh, trimesh.Scene) and not any(len(getattr(g, "faces", ())) for g in mesh.geometry.values()):
        raise RuntimeError("the model produced an empty mesh")
    dest = work_dir / name
    mesh.export(dest, file_type="glb")
    return dest


# -- libraries from a source checkout ------------------------------------------------------------------------------


def _source_paths(spec: ModelSpec) -> list[Path]:
    source = spec.options.get("source")
    if not source:
        return []
    return [Path(str(s)).expanduser() for s in (source if isinstance(source, list) else [source])]


def source_reasons(spec: ModelSpec) -> list[str]:
    return [f"source checkout not found at {p}" for p in _source_paths(spec) if not p.is_dir()]


def add_source_paths(spec: ModelSpec) -> None:
    for path in _source_paths(spec):
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))


@contextmanager
def source_on_path(spec: ModelSpec) -> Iterator[None]:
    with paths_on_sys_path(*_source_paths(spec)):
        yield


@contextmanager
def paths_on_sys_path(*paths: Path) -> Iterator[None]:
    """The folders (those that exist) at the front of ``sys.path`` for the block, as they were after it."""
    added = [str(p) for p in paths if p.is_dir() and str(p) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def _findable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False
