"""UniRig (github.com/VAST-AI-Research/UniRig): a mesh -> the same mesh with a predicted skeleton and skin weights.

UniRig is not a package: its code is the ``src`` folder of a checkout (imported as ``src.*``, a namespace package)
and its settings are the checkout's ``configs`` folder, so ``options.source`` names the checkout. Its weights are
the Lightning checkpoints of the hub repository ``VAST-AI/UniRig`` (``skeleton/articulation-xl_quantization_256/
model.ckpt`` and ``skin/articulation-xl/model.ckpt``, as ``src/inference/download.py`` maps them), in a local
folder of that layout or from the hub.

Upstream's way (launch/inference/generate_skeleton.sh, generate_skin.sh, merge.sh) is three scripts per mesh, each
a new process: ``src/data/extract.py`` loads the mesh in Blender (``bpy``) and writes ``raw_data.npz``; ``run.py
--task=configs/task/<task>.yaml`` builds the model and a Lightning ``Trainer`` and predicts, loading the checkpoint
again every time; ``src/inference/merge.py`` loads the original file in Blender again and adds the armature and
vertex groups. This adapter builds what ``run.py`` builds, once, when the model is loaded, and keeps it:

- per task (``configs/task/quick_inference_skeleton_articulationxl_ar_256.yaml``, then
  ``quick_inference_unirig_skin.yaml``): ``TransformConfig.parse`` of the transform's ``predict_transform_config``
  (``src/data/transform.py``), the tokenizer (``TokenizerConfig.parse`` and ``get_tokenizer``, ``src/tokenizer``),
  the model (``get_model(tokenizer=..., **model config)``, ``src/model/parse.py``) and the Lightning module
  (``get_system(**system config, model=..., ...)``, ``src/system/parse.py``: ``ARSystem``, ``SkinSystem``), with
  the checkpoint's ``state_dict`` loaded into it as ``Trainer.predict(ckpt_path=...)`` does. Paths in the configs
  that are relative to the checkout (``./configs/skeleton/*.yaml``) are made absolute, so the worker's working
  directory does not matter.
- per call, for each task: a ``src/data/dataset.py`` ``UniRigDataset`` over one ``RawData`` file
  (``src/data/raw_data.py``), its item collated by ``collate_fn`` (the model's ``_process_fn``), and the system's
  ``predict_step(batch, 0)`` under bf16 autocast on CUDA (the tasks' ``precision: bf16-mixed``) and inference mode.
  The skeleton step returns ``DetokenizeOutput`` (joints, tails, parents, names); the skin step the skin weights of
  sampled surface points, which ``src/system/skin.py`` ``reskin`` (as ``SkinWriter`` calls it: median of the
  nearest samples, then one diffusion step along the mesh's edges) carries to the vertices of the mesh.

No Blender in the worker: extract.py only loads, triangulates, places in world space and simplifies the mesh
(``fast_simplification`` to ``faces_target_count``), which pocket3d's loaders (FBX through its own Blender
subprocess) and decimation do; merge.py only puts the skeleton and weights on the original mesh, which
``geometry.write_skinned_glb`` does (and pocket3d's export stage turns that into FBX through Blender). One thing
Blender does that matters: its importers turn Y-up glTF and OBJ into its Z-up frame, the frame UniRig was trained
in. The adapter rotates the mesh the same way (pocket3d hands every model its mesh Y-up) and rotates the skeleton
back, so the result is in the mesh's own coordinates, on its own vertices, UVs and texture.

UniRig normalises each mesh into [-1, 1]; the adapter reads the scale and shift it applied from the batch (the
vertices before and after) rather than assuming the formula, and maps joints back with it.

Progress: the skeleton is generated token by token (OPT, beam search); a ``stopping_criteria`` that never stops is
passed through the system's ``generate_kwargs`` to ``generate``, so every token reports progress and a cancelled job
stops there. ``ARSystem.predict_step`` swallows any exception and returns an empty list, so the cancellation is
re-raised after it, and an empty prediction otherwise is reported as the model's failure.

Quality presets set the face count of the mesh the model sees, the beam count of the skeleton's generation, and
the voxel grid of the skin model's voxel prior (upstream: 196, "increase this for better results"). The seed
defaults to the one the launch scripts pass (12345), so a mesh gets the same rig every time unless a seed is set.
"""

from __future__ import annotations

import copy
import importlib.util
import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.adapters.base import WeightedModel, is_local, source_on_path
from pocket3d.models.spec import InputRejected, ModelSpec, ProgressFn, RunInputs

SKELETON_TASK = "configs/task/quick_inference_skeleton_articulationxl_ar_256.yaml"
SKIN_TASK = "configs/task/quick_inference_unirig_skin.yaml"
SKELETON_CHECKPOINT = "skeleton/articulation-xl_quantization_256/model.ckpt"
SKIN_CHECKPOINT = "skin/articulation-xl/model.ckpt"
DEFAULT_SEED = 12345  # what launch/inference/generate_skeleton.sh and generate_skin.sh pass to run.py
DATA_CLASS = "inference"  # the class Datapath gives files named on the command line (src/data/datapath.py)
# Blender's glTF and OBJ importers: +Y up becomes +Z up, +Z (the front) becomes -Y. UniRig learnt in that frame.
Y_UP_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
# The stages' shares of the progress bar.
SKELETON_START, SKIN_START, TRANSFER_START = 0.1, 0.6, 0.85


class UniRigParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    faces_target_count: int | None = Field(None, ge=1000, le=500_000, description="the mesh the model sees is "
                                           "simplified to this many faces; default from quality: 20000/50000/50000")
    num_beams: int | None = Field(None, ge=1, le=30, description="beams of the skeleton's generation; default "
                                  "from quality: 4/15/20 (upstream 15)")
    voxel_grid: int | None = Field(None, ge=64, le=512, description="voxel grid of the skin model's voxel prior; "
                                   "default from quality: 128/196/256 (upstream 196)")


@dataclass
class _Task:
    """One of UniRig's two predict tasks, built as run.py builds it."""

    system: Any  # the LightningModule (ARSystem or SkinSystem), its model inside
    model: Any
    tokenizer: Any
    transform_config: dict  # the transform's predict_transform_config, as read (re-parsed with a call's grid)
    transform: Any  # TransformConfig, parsed from it
    data_name: str


@dataclass
class _Loaded:
    skeleton: _Task
    skin: _Task
    skin_transforms: dict[int, Any] = field(default_factory=dict)  # voxel grid -> TransformConfig


class UniRigModel(WeightedModel):
    """A mesh -> the mesh with UniRig's skeleton and skin weights (GLB with one skin; FBX through the export)."""

    Params = UniRigParams
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers", "box")
    default_weights: ClassVar[str | None] = "VAST-AI/UniRig"
    weight_files: ClassVar[tuple[str, ...]] = (SKELETON_CHECKPOINT, SKIN_CHECKPOINT)
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "low": {"faces_target_count": 20000, "num_beams": 4, "voxel_grid": 128},
        "medium": {"faces_target_count": 50000, "num_beams": 15, "voxel_grid": 196},
        "high": {"faces_target_count": 50000, "num_beams": 20, "voxel_grid": 256},
    }

    # -- availability and loading ---------------------------------------------------------------------------------

    @classmethod
    def unavailable_reasons(cls, spec: ModelSpec) -> list[str]:
        reasons = super().unavailable_reasons(spec)
        with source_on_path(spec):
            importable, root = _code_importable(), _checkout(spec)
        if not importable:
            reasons.append("UniRig's code (the src folder of a VAST-AI-Research/UniRig checkout) is not importable: "
                           "set options.source to the checkout")
        elif root is not None and root.is_dir():
            missing = [t for t in _tasks(spec) if not (root / t).is_file()]
            if missing:
                reasons.append(f"UniRig's task configs are missing from {root}: {', '.join(missing)}")
        return reasons

    def build(self) -> Any:
        root = _checkout(self.spec)
        if root is None:
            raise RuntimeError("UniRig's code is not importable: set options.source to the UniRig checkout")
        skeleton_task, skin_task = _tasks(self.spec)
        return _Loaded(skeleton=self._task(root, skeleton_task, self._checkpoint(SKELETON_CHECKPOINT)),
                       skin=self._task(root, skin_task, self._checkpoint(SKIN_CHECKPOINT)))

    def _checkpoint(self, name: str) -> Path:
        if is_local(self.weights):
            return Path(self.weights) / name
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=self.weights, filename=name))

    def _task(self, root: Path, task_path: str, checkpoint: Path) -> _Task:
        """What run.py builds for ``--task=<task_path>`` in predict mode, with the checkpoint's weights loaded."""
        import torch
        from box import Box
        from src.data.transform import TransformConfig
        from src.model.parse import get_model
        from src.system.parse import get_system
        from src.tokenizer.parse import get_tokenizer
        from src.tokenizer.spec import TokenizerConfig

        task = _read_config(root, root / task_path)
        parts = task["components"]
        transform_config = _read_config(root, _component(root, "transform", parts["transform"]))
        transform_config = transform_config["predict_transform_config"]
        tokenizer = None
        if parts.get("tokenizer"):
            tokenizer_config = _read_config(root, _component(root, "tokenizer", parts["tokenizer"]))
            tokenizer = get_tokenizer(config=TokenizerConfig.parse(config=Box(tokenizer_config)))
        model = get_model(tokenizer=tokenizer, **Box(_read_config(root, _component(root, "model", parts["model"]))))
        system = get_system(**Box(_read_config(root, _component(root, "system", parts["system"]))), model=model,
                            optimizer_config=None, loss_config=None, scheduler_config=None, steps_per_epoch=1)
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        system.load_state_dict(state["state_dict"])  # strict, as Lightning loads a checkpoint
        del state
        system.to(torch.device(self.torch_device)).eval()
        return _Task(system=system, model=model, tokenizer=tokenizer, transform_config=transform_config,
                     transform=TransformConfig.parse(config=Box(copy.deepcopy(transform_config))),
                     data_name=str(parts.get("data_name") or "raw_data.npz"))

    # -- one call -------------------------------------------------------------------------------------------------

    def run(self, inputs: RunInputs, params: UniRigParams, progress: ProgressFn) -> dict[str, Path]:
        from pocket3d.geometry.gltf_writer import Skeleton, write_skinned_glb
        from pocket3d.models.builtin.rigging import load_mesh

        if inputs.mesh is None:
            raise InputRejected("auto-rigging needs a mesh")
        fmt = inputs.mesh.suffix.lower().lstrip(".")
        progress(0.02, "reading the mesh")
        mesh = load_mesh(inputs.mesh, fmt)  # a MeshError says what is wrong with the file
        if mesh.area <= 0:
            raise InputRejected("the mesh has no faces with any area: there is no shape to rig")
        settings = self.settings(params, inputs.quality)
        to_model = Y_UP_TO_BLENDER  # the mesh is Y-up; UniRig learned in Blender's Z-up frame
        seen = _model_mesh(mesh, to_model, int(settings["faces_target_count"]))
        seed = int(inputs.seed) if inputs.seed is not None else DEFAULT_SEED
        progress(0.05, f"the model sees {len(seen.faces)} faces, turned Z-up; seed {seed}")
        with self.one_call() as loaded:
            _seed_everything(seed)
            joints, tails, parents, names = self._skeleton(loaded, seen, inputs.work_dir, settings, progress)
            progress(SKIN_START, f"predicting skin weights for {len(names)} joints")
            weights = self._skin(loaded, seen, joints, tails, parents, names, mesh, to_model, inputs.work_dir,
                                 int(settings["voxel_grid"]), progress)
        progress(0.95, "writing the rigged mesh")
        skeleton = Skeleton(_unique(names), [-1 if p is None else int(p) for p in parents], joints @ to_model)
        out = inputs.work_dir / "rigged.glb"
        write_skinned_glb(mesh, skeleton, weights, out)
        return {"mesh": out}

    def _skeleton(self, loaded: _Loaded, seen: Any, work_dir: Path, settings: dict[str, Any],
                  progress: ProgressFn) -> tuple[np.ndarray, np.ndarray | None, list, list[str]]:
        """The skeleton UniRig predicts, in the model's frame (before its normalisation)."""
        task = loaded.skeleton
        batch, before = self._batch(task, task.transform, _raw_data(seen), work_dir / "skeleton")
        stopper = _TokenProgress(progress, SKELETON_START, SKIN_START,
                                 int(task.system.generate_kwargs.get("max_new_tokens", 2048)))
        original = task.system.generate_kwargs
        task.system.generate_kwargs = {**original, "num_beams": int(settings["num_beams"]),
                                       "stopping_criteria": stopper.criteria()}
        progress(SKELETON_START, f"predicting the skeleton ({settings['num_beams']} beams)")
        try:
            with self._predicting():
                prediction = task.system.predict_step(self._on_device(batch), 0)
        finally:
            task.system.generate_kwargs = original
        if stopper.cancelled is not None:
            raise stopper.cancelled
        if not prediction:
            raise RuntimeError("UniRig predicted no skeleton for this mesh (its generation failed; the worker's log "
                               "has UniRig's own message)")
        found = prediction[0]
        scale, shift = _fitted_normalisation(before, _origin_vertices(batch))
        joints = (np.asarray(found.joints, dtype=np.float64) - shift) / scale
        tails = None if found.tails is None else (np.asarray(found.tails, dtype=np.float64) - shift) / scale
        names = list(found.names) if found.names is not None else [f"bone_{i}" for i in range(len(joints))]
        return joints, tails, list(found.parents), names

    def _skin(self, loaded: _Loaded, seen: Any, joints: np.ndarray, tails: np.ndarray | None, parents: list,
              names: list[str], mesh: Any, to_model: np.ndarray, work_dir: Path, grid: int,
              progress: ProgressFn) -> np.ndarray:
        """Skin weights for every vertex of ``mesh`` (the input's own), (vertices, joints), rows summing to 1."""
        from src.system.skin import reskin

        task = loaded.skin
        raw = _raw_data(seen, joints=joints.astype(np.float32), parents=parents, names=names,
                        tails=None if tails is None else tails.astype(np.float32))
        batch, before = self._batch(task, self._skin_transform(loaded, grid), raw, work_dir / "skin")
        if int(_first(batch["num_bones"])) != len(joints):
            raise RuntimeError(f"UniRig's skin step rearranged the skeleton ({len(joints)} joints in, "
                               f"{int(_first(batch['num_bones']))} out)")
        with self._predicting():
            prediction = task.system.predict_step(self._on_device(batch), 0)
        skin = _numpy(prediction["skin_pred"][0]).astype(np.float32)
        sampled = _numpy(prediction.get("sampled_vertices", batch["vertices"])[0]).astype(np.float32)
        scale, shift = _fitted_normalisation(before, _origin_vertices(batch))
        progress(TRANSFER_START, f"carrying the weights to the mesh's {len(mesh.vertices)} vertices (reskin)")
        targets = (scale * (np.asarray(mesh.vertices, dtype=np.float64) @ to_model.T) + shift).astype(np.float32)
        weights = reskin(sampled_vertices=sampled, vertices=targets, parents=parents, faces=np.asarray(mesh.faces),
                         sampled_skin=skin, sample_method="median", alpha=2.0, threshold=0.03)
        return _every_vertex_weighted(np.asarray(weights, dtype=np.float64), targets,
                                      scale * joints + shift)

    def _skin_transform(self, loaded: _Loaded, grid: int) -> Any:
        """The skin task's TransformConfig with the voxel prior on a ``grid`` voxel grid (parsed once per grid)."""
        if grid not in loaded.skin_transforms:
            from box import Box
            from src.data.transform import TransformConfig

            config = copy.deepcopy(loaded.skin.transform_config)
            voxel = ((config.get("vertex_group_config") or {}).get("kwargs") or {}).get("voxel_skin")
            if isinstance(voxel, dict):
                voxel["grid"] = grid
            loaded.skin_transforms[grid] = TransformConfig.parse(config=Box(config))
        return loaded.skin_transforms[grid]

    def _batch(self, task: _Task, transform: Any, raw: dict[str, Any], folder: Path) -> tuple[dict, np.ndarray]:
        """One collated batch of UniRig's own dataset over ``raw`` (written where the dataset reads it), and the
        vertices as written, to measure the normalisation the dataset applies."""
        from src.data.dataset import UniRigDataset
        from src.data.raw_data import RawData

        RawData(**raw).save(path=str(folder / task.data_name))
        dataset = UniRigDataset(data=[(DATA_CLASS, str(folder))], name=f"predict-{DATA_CLASS}",
                                process_fn=task.model._process_fn, tokenizer=task.tokenizer,
                                transform_config=transform, data_name=task.data_name)
        return dataset.collate_fn([dataset[0]]), raw["vertices"].astype(np.float64)

    def _on_device(self, value: Any) -> Any:
        import torch

        if isinstance(value, torch.Tensor):
            return value.to(self.torch_device)
        if isinstance(value, dict):
            return {k: self._on_device(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._on_device(v) for v in value]
        return value

    @contextmanager
    def _predicting(self) -> Iterator[None]:
        """As Trainer.predict runs the tasks: inference mode, bf16 autocast on CUDA (precision: bf16-mixed)."""
        import torch

        cuda = self.torch_device.startswith("cuda")
        with torch.inference_mode(), (torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()):
            yield


# -- the mesh UniRig sees -----------------------------------------------------------------------------------------


def _model_mesh(mesh: Any, to_model: np.ndarray, faces_target: int) -> Any:
    """The mesh as extract.py hands it to UniRig: in Blender's frame, one surface (UV seams welded), simplified to
    ``faces_target`` faces when it has more."""
    import trimesh

    from pocket3d.geometry.decimate import decimate_mesh
    from pocket3d.geometry.meshes import weld

    welded = weld(np.asarray(mesh.vertices, dtype=np.float64) @ to_model.T, mesh.faces)
    seen = decimate_mesh(welded.mesh(), faces_target)
    seen = trimesh.Trimesh(seen.vertices, seen.faces, process=False)
    seen.remove_unreferenced_vertices()
    return seen


def _raw_data(seen: Any, **skeleton: Any) -> dict[str, Any]:
    """The fields of UniRig's RawData for a mesh (and a skeleton), typed as extract.py's save_raw_data types
    them."""
    fields: dict[str, Any] = {
        "vertices": np.asarray(seen.vertices, dtype=np.float32),
        "vertex_normals": np.asarray(seen.vertex_normals, dtype=np.float32),
        "faces": np.asarray(seen.faces, dtype=np.int64),
        "face_normals": np.asarray(seen.face_normals, dtype=np.float32),
        "joints": None, "tails": None, "skin": None, "no_skin": None, "parents": None, "names": None,
        "matrix_local": None,
    }
    fields.update(skeleton)
    return fields


# -- between frames ----------------------------------------------------------------------------------------------


def _origin_vertices(batch: dict) -> np.ndarray:
    """The batch's first mesh as UniRig's transform left it (``origin_vertices``, padded to ``num_points``)."""
    count = int(_first(batch["num_points"]))
    return _numpy(batch["origin_vertices"][0])[:count].astype(np.float64)


def _fitted_normalisation(before: np.ndarray, after: np.ndarray) -> tuple[float, np.ndarray]:
    """The uniform scale and shift with ``after = scale * before + shift`` (UniRig's normalize_into), fitted on
    the vertices; anything else (a rotation, a reordering) is refused rather than silently misplacing joints."""
    if before.shape != after.shape:
        raise RuntimeError(f"UniRig changed the mesh's vertices ({len(before)} in, {len(after)} out)")
    centre_b, centre_a = before.mean(axis=0), after.mean(axis=0)
    spread = float(((before - centre_b) ** 2).sum())
    if spread <= 0:
        raise InputRejected("the mesh is a single point")
    scale = float(((after - centre_a) * (before - centre_b)).sum()) / spread
    shift = centre_a - scale * centre_b
    error = float(np.abs(scale * before + shift - after).max())
    if not scale > 0 or error > 1e-3 * max(float(np.ptp(after, axis=0).max()), 1e-12):
        raise RuntimeError("UniRig's normalisation of the mesh is not a uniform scale and shift; cannot map the "
                           "skeleton back onto the mesh")
    return scale, shift


def _every_vertex_weighted(weights: np.ndarray, vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Rows normalised to 1; a vertex left with no weight (reskin divides 0 by 0 where every sample near it said
    nothing) follows its nearest joint."""
    weights = np.where(np.isfinite(weights), np.clip(weights, 0.0, None), 0.0)
    empty = weights.sum(axis=1) <= 1e-12
    if empty.any():
        nearest = np.linalg.norm(vertices[empty, None, :] - joints[None, :, :], axis=2).argmin(axis=1)
        weights[np.flatnonzero(empty), nearest] = 1.0
    return weights / weights.sum(axis=1, keepdims=True)


def _unique(names: list[str]) -> list[str]:
    """Joint names made unique (FBX bones need them so), the later duplicates numbered."""
    seen: dict[str, int] = {}
    out = []
    for name in (str(n) for n in names):
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}.{count}")
    return out


# -- progress through generate() -----------------------------------------------------------------------------------


class _TokenProgress:
    """A stopping criterion that never stops generation: it reports each generated token, and keeps the
    cancellation that ``progress`` raises (ARSystem.predict_step swallows it) before letting it end the
    generation. The model deep-copies ``generate_kwargs``; the copies report here all the same, as the criterion's
    class holds this object, not its instances."""

    def __init__(self, progress: ProgressFn, start: float, end: float, max_tokens: int):
        self.progress, self.start, self.end, self.max_tokens = progress, start, end, max(1, max_tokens)
        self.tokens = 0
        self.cancelled: BaseException | None = None

    def criteria(self) -> Any:
        from transformers import StoppingCriteria, StoppingCriteriaList

        owner = self

        class ReportTokens(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                import torch

                owner.token()
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        return StoppingCriteriaList([ReportTokens()])

    def token(self) -> None:
        self.tokens += 1
        try:
            self.progress(self.start + (self.end - self.start) * min(self.tokens / self.max_tokens, 1.0),
                          f"predicting the skeleton: token {self.tokens}")
        except BaseException as e:
            self.cancelled = e
            raise


# -- small helpers ------------------------------------------------------------------------------------------------


def _sources(spec: ModelSpec) -> list[Path]:
    source = spec.options.get("source")
    return [Path(str(p)).expanduser() for p in (source if isinstance(source, list) else [source] if source else [])]


def _code_importable() -> bool:
    try:
        return importlib.util.find_spec("src.system.skin") is not None
    except (ImportError, ValueError):
        return False


def _checkout(spec: ModelSpec) -> Path | None:
    """Where UniRig's configs are: the first ``options.source`` (the checkout), else the folder above the
    importable ``src`` package; None when there is neither."""
    sources = _sources(spec)
    if sources:
        return sources[0]
    try:
        found = importlib.util.find_spec("src.system.skin")
    except (ImportError, ValueError):
        return None
    return Path(found.origin).parents[2] if found is not None and found.origin else None


def _tasks(spec: ModelSpec) -> tuple[str, str]:
    return (str(spec.options.get("skeleton_task", SKELETON_TASK)), str(spec.options.get("skin_task", SKIN_TASK)))


def _component(root: Path, kind: str, name: str) -> Path:
    """run.py's ``load(kind, os.path.join('configs/<kind>', name))``: ``.yaml`` added when missing."""
    name = str(name).removesuffix(".yaml") + ".yaml"
    return root / "configs" / kind / name


def _read_config(root: Path, path: Path) -> dict:
    """A YAML config, with the paths in it that are relative to the checkout (``./configs/...``) made absolute."""
    import yaml

    def absolute(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: absolute(v) for k, v in value.items()}
        if isinstance(value, list):
            return [absolute(v) for v in value]
        if isinstance(value, str) and value.removeprefix("./").startswith("configs/"):
            return str(root / value.removeprefix("./"))
        return value

    return absolute(yaml.safe_load(path.read_text()) or {})


def _seed_everything(seed: int) -> None:
    """What run.py's ``L.seed_everything(seed)`` seeds: Python's, NumPy's and torch's generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().float().cpu().numpy()
    return np.asarray(value)


def _first(value: Any) -> Any:
    return value[0] if hasattr(value, "__len__") else value
