"""Part completion with HoloPart (VAST-AI-Research/HoloPart): each part of a segmented mesh made whole, its hidden
surfaces (where it met the other parts) generated.

HoloPart is not packaged: ``options.source`` names a checkout (its ``holopart/`` folder goes on ``sys.path``);
``options.weights`` a local folder or the hub id ``VAST-AI/HoloPart``. The adapter does what the demo
``scripts/inference_holopart.py`` does, with the pipeline kept loaded between calls:

- ``HoloPartPipeline.from_pretrained(weights).to(device, dtype)`` (float16 on CUDA), ``vae.set_flash_decoder()``;
- the input: a segmented GLB, as pocket3d's segmentation models write it (parts listed in the scene's extras, one
  node each), or as the HoloPart README prepares one (a scene of one mesh per part). Anything else is refused: a
  mesh without parts has nothing to complete. The whole shape is first centred and scaled so its longest side
  spans [-1, 1] (the demo takes the file's coordinates as they are, and its example files are in that range);
- per part (``prepare_data``): 20,480 surface points with normals of the part; the same of the whole shape with a
  column marking the part's points (here taken from the face each point was sampled on, where the demo looks up
  the nearest part point with torch_cluster); the part's points moved and scaled into its own box (half size
  0.95 x 0.7);
- ``pipe(part_surface, whole_surface, part_local_surface, num_inference_steps, guidance_scale, generator,
  output_type="latent")`` on batches of parts (``options.batch_size``, the demo's 8; one seeded generator per batch,
  as there), then ``holopart.inference_utils.flash_extract_geometry(latent, pipe.vae, bounds, octree_depth,
  num_chunks)`` for each part, the mesh reduced to ``max_faces`` (the demo: 10,000 with pymeshlab; here
  pocket3d's decimation) and moved back to where the part was.

A part with no area, or whose surface the decoder does not find, is kept as it was (``"completed": false`` in
labels.json). The output is a segmented GLB of the completed parts (part ids and names kept) and ``labels.json``:
a label per face of that GLB, in the order of its part nodes. HoloPart's pipeline never calls its step callback, so
progress (and cancellation) goes by batch of parts, not by step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.adapters.base import WeightedModel
from pocket3d.models.spec import InputRejected, ProgressFn, RunInputs

SURFACE_SAMPLES = 20480  # NUM_SURFACE_SAMPLES
PART_NORMALIZE_SCALE = 0.7  # a part's points fill 0.95 of this half size in its own frame
WHOLE_HALF_EXTENT = 1.0  # the whole shape's longest side spans [-1, 1]
BOUNDS = (-1.05, -1.05, -1.05, 1.05, 1.05, 1.05)  # where the decoder looks for a part's surface, in its frame
NUM_CHUNKS = 10000
DEFAULT_SEED = 42  # the demo's
DEFAULT_BATCH = 8


class HoloPartParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(None, ge=1, le=200, description="diffusion steps per part; default from quality")
    guidance_scale: float | None = Field(None, ge=0, le=20, description="classifier-free guidance (demo: 3.5)")
    octree_depth: int | None = Field(None, ge=6, le=10, description="the decoder's grid: 2**depth cells a side")
    max_faces: int | None = Field(None, ge=100, le=500_000, description="faces per completed part, at most")


@dataclass
class Part:
    part_id: int
    name: str
    mesh: Any  # trimesh.Trimesh, world coordinates


class HoloPartModel(WeightedModel):
    """Segmented mesh -> the same parts, each completed where the others hid it (HoloPart)."""

    Params = HoloPartParams
    requires: ClassVar[tuple[str, ...]] = ("torch", "diffusers", "transformers", "torch_cluster", "diso", "holopart")
    default_weights = "VAST-AI/HoloPart"
    weight_files = ("model_index.json",)
    # The demo: 50 steps, guidance 3.5, octree depth 9, 10,000 faces a part.
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "low": {"steps": 25, "guidance_scale": 3.5, "octree_depth": 8, "max_faces": 5000},
        "medium": {"steps": 50, "guidance_scale": 3.5, "octree_depth": 9, "max_faces": 10000},
        "high": {"steps": 50, "guidance_scale": 3.5, "octree_depth": 10, "max_faces": 20000},
    }

    def build(self) -> Any:
        import holopart.inference_utils  # noqa: F401  (imports diso: a missing decoder fails the load, not a job)
        from holopart.pipelines.pipeline_holopart import HoloPartPipeline

        pipe = HoloPartPipeline.from_pretrained(self.weights).to(self.torch_device, self.dtype)
        pipe.vae.set_flash_decoder()
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        return pipe

    def run(self, inputs: RunInputs, params: HoloPartParams, progress: ProgressFn) -> dict[str, Path]:
        import numpy as np
        import torch
        import trimesh
        from holopart.inference_utils import flash_extract_geometry

        from pocket3d.geometry.gltf_writer import write_face_labels, write_segmented_glb

        progress(0.02, "reading the parts")
        parts = read_parts(inputs.mesh)
        knobs = self.settings(params, inputs.quality)
        seed = inputs.seed if inputs.seed is not None else DEFAULT_SEED
        batch_size = max(1, int(self.spec.options.get("batch_size", DEFAULT_BATCH)))
        centre, scale = _whole_frame(parts)
        normalized = [trimesh.Trimesh((p.mesh.vertices - centre) * scale, p.mesh.faces, process=False) for p in parts]
        todo = [i for i, m in enumerate(normalized) if float(m.area) > 0]
        completed: dict[int, Any] = {}
        if todo:
            progress(0.05, f"sampling the surfaces of {len(todo)} parts")
            cond = _conditions([normalized[i] for i in todo], seed)
            device = self.torch_device
            batches = range(0, len(todo), batch_size)
            with self.one_call() as pipe, torch.no_grad():
                for n, start in enumerate(batches):
                    end = min(start + batch_size, len(todo))
                    progress(0.08 + 0.85 * n / len(batches), f"completing parts {start + 1}-{end} of {len(todo)}")
                    latents = pipe(
                        part_surface=cond.part[start:end].to(device),
                        whole_surface=cond.whole[start:end].to(device),
                        part_local_surface=cond.local[start:end].to(device),
                        num_inference_steps=int(knobs["steps"]), guidance_scale=float(knobs["guidance_scale"]),
                        generator=self.generator(seed), output_type="latent").samples
                    for j, latent in enumerate(latents):
                        index = todo[start + j]
                        vertices, faces = flash_extract_geometry(
                            latent.unsqueeze(0), pipe.vae, bounds=BOUNDS, octree_depth=int(knobs["octree_depth"]),
                            num_chunks=NUM_CHUNKS)[0]
                        if vertices is None or faces is None or len(faces) == 0:
                            continue
                        local = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces))
                        mesh = _reduced(local, int(knobs["max_faces"]))
                        # back from the part's box to the whole's frame, then to the input's coordinates
                        whole = mesh.vertices * cond.scales[start + j] + cond.centres[start + j]
                        completed[index] = trimesh.Trimesh(whole / scale + centre, mesh.faces, process=False)
                    del latents
        progress(0.95, f"writing {len(parts)} parts ({len(completed)} completed)")
        meshes = [completed.get(i, p.mesh) for i, p in enumerate(parts)]
        labels = np.concatenate([np.full(len(m.faces), p.part_id) for p, m in zip(parts, meshes, strict=True)])
        whole_mesh = trimesh.util.concatenate([trimesh.Trimesh(m.vertices, m.faces, process=False) for m in meshes])
        names = {p.part_id: p.name for p in parts}
        glb = inputs.work_dir / "completed.glb"
        write_segmented_glb(whole_mesh, labels, glb, names=names)
        dest = inputs.work_dir / "labels.json"
        write_face_labels(labels, dest, names=names, extras={
            p.part_id: {"completed": i in completed, "source_faces": len(p.mesh.faces)} for i, p in enumerate(parts)})
        return {"mesh": glb, "labels": dest}


# -- the input ------------------------------------------------------------------------------------------------------


def read_parts(path: Path | None) -> list[Part]:
    """The parts of a segmented GLB: pocket3d's (parts listed in the scene extras, a node per part, named), or a
    scene of one mesh per part (the HoloPart README's input). Anything else is refused."""
    import numpy as np
    import trimesh

    from pocket3d.geometry.gltf_writer import is_segmented
    from pocket3d.geometry.validate import load_scene

    if path is None:
        raise InputRejected("HoloPart completes the parts of a segmented mesh: none was given")
    if path.suffix.lower() != ".glb":
        raise InputRejected(f"HoloPart needs a segmented GLB (one node per part), not a {path.suffix.lstrip('.')} "
                            "file: segment the mesh first (model partfield or builtin_segmentation)")
    scene = load_scene(path, "glb")
    named: dict[str, dict] = {}
    if is_segmented(scene.metadata):
        named = {str(p.get("name", f"part_{p['part_id']}")): p for p in scene.metadata["parts"]}
    grouped: dict[int, list[Any]] = {}
    titles: dict[int, str] = {}
    for node in scene.graph.nodes_geometry:
        transform, geometry = scene.graph[node]
        source = scene.geometry.get(geometry)
        if not isinstance(source, trimesh.Trimesh) or len(source.faces) == 0:
            continue
        mesh = trimesh.Trimesh(source.vertices, source.faces, process=False)
        mesh.apply_transform(transform)
        entry = named.get(str(node))
        if entry is not None:
            pid, title = int(entry["part_id"]), str(entry.get("name", node))
        else:
            pid, title = 10_000 + len(titles), str(node)
        grouped.setdefault(pid, []).append(mesh)
        titles.setdefault(pid, title)
    if not named and len(grouped) < 2:
        raise InputRejected("the mesh has no parts to complete: HoloPart needs a segmented GLB (parts listed in its "
                            "extras, as pocket3d's segmentation writes them, or one mesh per part); segment it first "
                            "(model partfield or builtin_segmentation)")
    if not grouped:
        raise InputRejected("the segmented GLB holds no triangles")
    # Parts without an id of their own (a plain scene of meshes) are numbered after those with one.
    taken = {pid for pid in grouped if pid < 10_000}
    free = (i for i in range(10_000 * 2) if i not in taken)
    parts = []
    for pid in sorted(grouped):
        final = pid if pid < 10_000 else next(free)
        meshes = grouped[pid]
        mesh = meshes[0] if len(meshes) == 1 else trimesh.util.concatenate(meshes)
        if not np.isfinite(mesh.vertices).all():
            raise InputRejected(f"part {titles[pid]!r} has non-finite coordinates")
        parts.append(Part(final, titles[pid], mesh))
    return parts


def _whole_frame(parts: list[Part]) -> tuple[Any, float]:
    """Centre and scale that put the whole shape's bounding box in [-1, 1] (longest side)."""
    import numpy as np

    points = np.concatenate([p.mesh.vertices for p in parts])
    low, high = points.min(axis=0), points.max(axis=0)
    return (low + high) / 2, WHOLE_HALF_EXTENT / max(float((high - low).max()) / 2, 1e-12)


@dataclass
class Conditions:
    part: Any  # (P, S, 6) float32: points and normals of each part
    whole: Any  # (P, S, 7): the whole's points and normals, and 1 where the point lies on the part
    local: Any  # (P, S, 6): the part's points in its own box
    centres: list[Any]  # each part's box centre, in the whole's frame
    scales: list[float]  # and its scale: whole = local * scale + centre


def _conditions(parts: list[Any], seed: int) -> Conditions:
    import numpy as np
    import torch
    import trimesh

    part_cond, local_cond, centres, scales = [], [], [], []
    for i, mesh in enumerate(parts):
        points, face = trimesh.sample.sample_surface(mesh, SURFACE_SAMPLES, seed=seed + i)
        cond = np.concatenate([points, mesh.face_normals[face]], axis=1).astype(np.float32)
        low, high = points.min(axis=0), points.max(axis=0)
        centre = (low + high) / 2
        scale = max(float(np.abs(points - centre).max()) / (0.95 * PART_NORMALIZE_SCALE), 1e-12)
        local = cond.copy()
        local[:, :3] = (points - centre) / scale
        part_cond.append(cond)
        local_cond.append(local)
        centres.append(centre)
        scales.append(scale)
    whole = trimesh.util.concatenate([trimesh.Trimesh(m.vertices, m.faces, process=False) for m in parts])
    owner = np.concatenate([np.full(len(m.faces), i) for i, m in enumerate(parts)])
    points, face = trimesh.sample.sample_surface(whole, SURFACE_SAMPLES, seed=seed + len(parts))
    base = np.concatenate([points, whole.face_normals[face]], axis=1).astype(np.float32)
    whole_cond = [np.concatenate([base, (owner[face] == i).astype(np.float32)[:, None]], axis=1)
                  for i in range(len(parts))]
    return Conditions(torch.from_numpy(np.stack(part_cond)), torch.from_numpy(np.stack(whole_cond)),
                      torch.from_numpy(np.stack(local_cond)), centres, scales)


def _reduced(mesh: Any, max_faces: int) -> Any:
    from pocket3d.geometry.decimate import decimate_mesh

    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    return decimate_mesh(mesh, max_faces) if len(mesh.faces) > max_faces else mesh
