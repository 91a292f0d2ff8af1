"""The adapter interface every model implements, and the spec it is registered under."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)


class Feature(StrEnum):
    MESH_GENERATION = "mesh_generation"  # text or image(s) -> textured mesh
    TEXTURE_GENERATION = "texture_generation"  # mesh + text or image(s) -> textured mesh
    SEGMENTATION = "segmentation"  # mesh -> mesh with part labels
    AUTO_RIGGING = "auto_rigging"  # mesh -> skinned mesh with a skeleton
    # Stages a job may be composed of, never requested on their own (no route):
    TEXT_TO_IMAGE = "text_to_image"  # a prompt drawn as one view, for image models asked for text
    BACKGROUND_REMOVAL = "background_removal"  # the object cut out of its image, for models that want it so

    @property
    def is_stage_only(self) -> bool:
        return self in (Feature.TEXT_TO_IMAGE, Feature.BACKGROUND_REMOVAL)


MESH_FORMATS = frozenset({"glb", "gltf", "obj", "ply", "stl", "fbx"})
# What `supported_inputs` may name: the kinds of input, or a mesh format (meaning a mesh in that format).
# "image" is one image, "multiview" two or more views of one object: a single-image model must not be handed
# three views and silently use the first.
INPUT_KINDS = frozenset({"text", "image", "multiview", "mesh"}) | MESH_FORMATS


class NoParams(BaseModel):
    """Models without free-form parameters refuse any, so a typo is a 422 rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    feature: Feature
    supported_inputs: frozenset[str]
    supported_outputs: tuple[str, ...]
    vram_requirement: int = 0  # MB of device memory while loaded and running
    max_concurrent: int = 1
    devices: tuple[str, ...] = ("cpu",)  # device kinds it runs on: cpu, cuda
    description: str = ""
    pinned: bool = False  # the scheduler never evicts it once loaded (and loads it at start, as preload)
    preload: bool = False  # loaded in the background when the server starts: the first request finds it warm
    # How a job around the model is composed (pocket3d.models.pipeline):
    textured: bool = True  # its mesh has a texture; an untextured shape is followed by a paint stage
    cutout: bool = False  # wants its images with the background removed: a background-removal stage goes first
    paint_with: str | None = None  # the texture model to follow it, when not textured (default: the first fitting)
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def accepts(self, kinds: set[str], mesh_format: str | None = None) -> bool:
        """True when every given input kind (and the mesh's format, if any) is one this model takes."""
        for kind in kinds:
            if kind == "mesh":
                if "mesh" in self.supported_inputs:
                    continue
                if mesh_format is None or mesh_format not in self.supported_inputs:
                    return False
            elif kind not in self.supported_inputs:
                return False
        return True

    @property
    def takes_mesh(self) -> bool:
        return bool(self.supported_inputs & ({"mesh"} | MESH_FORMATS))


class StageCancelled(Exception):
    """Raised by the progress callback when the job was cancelled; adapters let it propagate."""


class InputRejected(Exception):
    """An adapter raises this when the inputs are unusable (not a fault of the model): job error INVALID_INPUT."""


ProgressFn = Callable[[float, str | None], None]


def warn(progress: ProgressFn, code: str, message: str) -> None:
    """Tell the user of something the model did other than asked (a fallback it took): the job lists it in its
    ``warnings`` as ``{code, message}``, and the message is the stage's progress message meanwhile. ``code`` is
    stable and upper-case (pocket3d.errors.WarningCode has the built-ins'). The worker's progress callback
    records it; beside a plain function given as ``progress`` (a test, a benchmark) it is only logged."""
    record = getattr(progress, "warn", None)
    if record is not None:
        record(code, message)
    else:
        log.info("warning %s: %s", code, message)


@dataclass
class RunInputs:
    """What one stage gets. Files are local paths, valid for the duration of ``run``."""

    work_dir: Path  # write outputs here; removed after the stage whatever happens
    text: str | None = None
    images: list[Path] = field(default_factory=list)
    mesh: Path | None = None
    quality: str = "medium"
    texture_resolution: int = 1024
    seed: int | None = None
    # The view each image shows, when the request named them ("front", "left", "back", "right"; see VIEW_AZIMUTHS)
    view_names: list[str] | None = None


# Named views as azimuths around the up axis (+Y): the camera at (sin a, 0, cos a) looks at the object, which
# faces +Z. "left" is the object's left side (at +X for an object facing +Z), as Tripo and Hunyuan3D-2mv name
# their views.
VIEW_AZIMUTHS: dict[str, float] = {"front": 0.0, "left": 90.0, "back": 180.0, "right": 270.0}


@dataclass
class Device:
    id: str  # "cpu", "cuda:0", ...
    kind: str  # "cpu" or "cuda"
    name: str
    memory_total: int  # MB
    memory_used: int = 0  # MB
    index: int | None = None  # the CUDA ordinal NVML and CUDA_VISIBLE_DEVICES know it by
    virtual: bool = False  # a slice of the CPU declared in the config, with a budget of its own


class ModelAdapter(ABC):
    """One model behind pocket3d. Subclasses declare their parameters and implement load/unload/run.

    ``run`` returns a mapping of output names to files it wrote under ``inputs.work_dir``; a stage that makes a
    mesh names it ``"mesh"`` and writes GLB (the export stage turns it into the asked format). An image the
    stages after it take (a drawn view, a cut-out) is ``"image"`` (or ``"image0"``, ``"image1"``...), published
    as ``<stage name>.png`` (``<stage name>-N.png``). Every other entry becomes a download of the job named
    ``<key>.<suffix>`` (``labels.json``); ``model`` and ``preview`` are the export stage's.

    It calls ``progress(fraction, message)`` now and then: the fraction (0-1) moves the job's progress bar, the
    message is what the user reads (the latest one is the job's ``message``), and it is where a cancelled job
    stops, so long loops should report. A fallback the user should know of is ``warn(progress, code, message)``.
    A mesh input is always Y-up (+Z forward, glTF's convention): pocket3d turns it so before the model sees it,
    and a mesh the model writes must be Y-up too. ``inputs.view_names`` names the view of each image when the
    request did (``VIEW_AZIMUTHS``).
    """

    Params: ClassVar[type[BaseModel]] = NoParams
    # Python packages the adapter imports; missing ones make the model unavailable with that reason.
    requires: ClassVar[tuple[str, ...]] = ()
    # A plugin found through the entry-point group declares its own spec; models.yaml may override it.
    default_spec: ClassVar[ModelSpec | None] = None
    # Modules a load imports beyond ``requires`` (a library's submodules its top level leaves out).
    warm_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.device: Device | None = None

    @classmethod
    def unavailable_reasons(cls, spec: ModelSpec) -> list[str]:
        """Why this model cannot run here, without loading it: missing packages, and a ``weights`` option that
        names a local path with nothing there. Adapters add their own checks by extending this."""
        reasons = [f"python package {p!r} is not installed"
                   for p in cls.requires if importlib.util.find_spec(p) is None]
        weights = spec.options.get("weights")
        if isinstance(weights, str) and weights.startswith(("/", "./", "~")):
            path = Path(weights).expanduser()
            if not path.exists():
                reasons.append(f"weights not found at {path}")
        return reasons

    @classmethod
    def warm(cls, spec: ModelSpec) -> None:
        """Import what a load of this model imports (``requires``, ``warm_modules``). A device worker calls it for
        every model it may host as soon as it spawns, so the first stage does not pay for the imports; one that
        fails is skipped (the load, if it is ever asked for, says why)."""
        for name in (*cls.requires, *cls.warm_modules):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - see the docstring
                continue

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: BaseModel) -> None:
        """Refuse at submission what ``run`` is sure to refuse (raise InputRejected): a wrong number of images,
        parameters that do not fit the inputs. The client then gets a 422 at once instead of a failed job."""

    def load(self, device: Device) -> None:
        """Bring the model onto ``device``. Models without weights (the built-ins) only note the device."""
        self.device = device

    def unload(self) -> None:
        self.device = None

    @abstractmethod
    def run(self, inputs: RunInputs, params: BaseModel, progress: ProgressFn) -> dict[str, Path]: ...
