"""Part segmentation with PartField (nv-tlabs/PartField): a learned feature field, then clustering.

PartField is not packaged: ``options.source`` names a checkout (its ``partfield/`` folder goes on ``sys.path``) and
``options.weights`` a folder holding ``model_objaverse.ckpt`` (or the hub id ``mikaelaangel/partfield-ckpt``). Its
scripts run through a Lightning trainer and write every result to ``exp_results/``; this adapter builds the same
objects once and keeps them loaded instead:

- ``partfield.config.setup`` reads ``configs/final/demo.yaml`` (``options.config`` may name another file) with
  ``continue_ckpt`` set, as ``partfield_inference.py -c configs/final/demo.yaml --opts continue_ckpt ...`` does;
- ``partfield.model_trainer_pvcnn_only_demo.Model(cfg)`` gets the checkpoint's ``state_dict``;
- per call, as ``Model.predict_step`` does for a mesh: the mesh is centred and scaled into [-0.9, 0.9], 100,000
  surface points go through ``model.pvcnn`` and ``model.triplane_transformer`` to triplanes, whose last 448
  channels are the part field; each face's feature is the mean of the field
  (``partfield.model.PVCNN.encoder_pc.sample_triplane_feat``) at ``points_per_face`` random points on it, sampled
  ``n_sample_each`` points at a time. On CUDA this runs under float16 autocast (the script's ``16-mixed``).
- the clustering of ``run_part_clustering.py``: features normalised to unit length, then scikit-learn's
  ``AgglomerativeClustering`` (ward) constrained to the face adjacency, or ``KMeans(random_state=0)``. The
  adjacency is built here: faces that share an edge once the mesh is welded by position (the script does not
  weld, so a UV seam cuts its graph), and separate pieces tied to their nearest neighbours by a spanning tree over
  their centres (the script's ``option 2``). The agglomerative tree is built once and cut at the count wanted.

``num_parts`` picks the count (1-20, the script's ``max_num_clusters``); without it the count in 2-20 whose
clustering has the best silhouette score (on a sample of faces) is chosen. The result is the input mesh, faces
and look kept, as a segmented GLB (one node per part, part 0 the largest by area) and ``labels.json`` (a label per
input face, in its order), as the built-in segmentation writes them.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.adapters.base import WeightedModel, is_local
from pocket3d.models.spec import InputRejected, ModelSpec, ProgressFn, RunInputs

CHECKPOINT = "model_objaverse.ckpt"
CONFIG = Path("configs") / "final" / "demo.yaml"
SURFACE_POINTS = 100_000  # Demo_Dataset.pc_num_pts
SDF_CHANNELS = 64  # the first channels of the triplanes; the rest are the part field
MAX_PARTS = 20  # run_part_clustering.py's max_num_clusters
SILHOUETTE_SAMPLE = 3000  # faces scored per candidate count when the count is chosen automatically
DEFAULT_SEED = 0  # upstream seeds everything with cfg.seed = 0


class PartFieldParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_parts: int | None = Field(None, ge=1, le=MAX_PARTS, description="number of parts; default: the count "
                                  "from 2 to 20 whose clustering scores best (silhouette)")
    method: Literal["agglomerative", "kmeans"] = Field(
        "agglomerative", description="agglomerative: ward clustering along the surface (parts stay connected); "
        "kmeans: clusters of the features alone (for messy meshes of many loose pieces)")
    points_per_face: int | None = Field(None, ge=1, le=4000, description="points averaged into each face's "
                                        "feature (upstream n_point_per_face); default from quality")


@dataclass
class LoadedPartField:
    model: Any  # partfield.model_trainer_pvcnn_only_demo.Model
    cfg: Any  # its yacs config
    sample_triplane_feat: Any


class PartFieldModel(WeightedModel):
    """Mesh -> parts: PartField's feature field on the faces, clustered (agglomerative or k-means)."""

    Params = PartFieldParams
    requires: ClassVar[tuple[str, ...]] = ("torch", "sklearn", "partfield")
    default_weights = "mikaelaangel/partfield-ckpt"
    # Points averaged per face: demo.yaml has 1000, the evaluation on PartObjaverse-Tiny 2000; the README suggests
    # fewer against running out of memory.
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "low": {"points_per_face": 250},
        "medium": {"points_per_face": 1000},
        "high": {"points_per_face": 2000},
    }

    # -- availability and loading -----------------------------------------------------------------------------

    @classmethod
    def required_files(cls, spec: ModelSpec) -> tuple[str, ...]:
        return (str(spec.options.get("checkpoint", CHECKPOINT)),)

    @classmethod
    def unavailable_reasons(cls, spec: ModelSpec) -> list[str]:
        reasons = super().unavailable_reasons(spec)
        if _config_file(spec) is None:
            named = spec.options.get("config")
            reasons.append(f"PartField config not found at {named}" if named else
                           f"PartField's {CONFIG} not found: set options.source to a checkout of nv-tlabs/PartField "
                           "(or options.config to the file)")
        return reasons

    def build(self) -> LoadedPartField:
        import torch

        try:
            from partfield.config import setup
            from partfield.model.PVCNN.encoder_pc import sample_triplane_feat
            from partfield.model_trainer_pvcnn_only_demo import Model
        except ModuleNotFoundError as e:
            raise RuntimeError(f"PartField's code needs the python package {e.name!r} (see its environment.yml)") from e
        config = _config_file(self.spec)
        if config is None:
            raise RuntimeError(f"PartField's {CONFIG} not found (options.source / options.config)")
        checkpoint = self._checkpoint()
        opts = ["continue_ckpt", checkpoint]
        for key in ("n_sample_each",):
            if key in self.spec.options:
                opts += [key, self.spec.options[key]]
        cfg = setup(argparse.Namespace(config_file=str(config), opts=opts), freeze=False)
        model = Model(cfg)
        # A Lightning checkpoint pickles the yacs config beside the weights, so it cannot be read weights-only;
        # the file is the one the operator configured.
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        model.to(self.torch_device).eval()
        return LoadedPartField(model, cfg, sample_triplane_feat)

    def _checkpoint(self) -> str:
        name = str(self.spec.options.get("checkpoint", CHECKPOINT))
        if is_local(str(self.spec.options.get("weights", self.default_weights))):
            return str(Path(self.weights) / name)
        from huggingface_hub import hf_hub_download

        return hf_hub_download(self.weights, name)

    # -- running ----------------------------------------------------------------------------------------------

    def run(self, inputs: RunInputs, params: PartFieldParams, progress: ProgressFn) -> dict[str, Path]:
        from pocket3d.geometry.gltf_writer import write_face_labels, write_segmented_glb
        from pocket3d.geometry.meshes import one_mesh
        from pocket3d.geometry.validate import load_scene

        if inputs.mesh is None:
            raise InputRejected("PartField segments a mesh: none was given")
        progress(0.02, "loading the mesh")
        mesh = one_mesh(load_scene(inputs.mesh, inputs.mesh.suffix.lstrip(".").lower()))
        faces = len(mesh.faces)
        if params.num_parts is not None and params.num_parts > faces:
            raise InputRejected(f"num_parts={params.num_parts}, but the mesh has only {faces} faces")
        if float(mesh.area) <= 0:
            raise InputRejected("the mesh has no area: every face is degenerate")
        knobs = self.settings(params, inputs.quality)
        seed = inputs.seed if inputs.seed is not None else DEFAULT_SEED
        with self.one_call() as loaded:
            features = self._face_features(loaded, mesh, int(knobs["points_per_face"]), seed, progress)
        progress(0.72, f"clustering {faces} faces ({params.method})")
        labels = cluster_faces(features, face_adjacency(mesh.vertices, mesh.faces), params.method, params.num_parts,
                               mesh.area_faces, seed)
        count = int(labels.max()) + 1
        progress(0.9, f"writing {count} parts")
        glb = inputs.work_dir / "segmented.glb"
        write_segmented_glb(mesh, labels, glb)
        dest = inputs.work_dir / "labels.json"
        write_face_labels(labels, dest, extras={p: {"method": f"partfield_{params.method}"} for p in range(count)})
        return {"mesh": glb, "labels": dest}

    def _face_features(self, loaded: LoadedPartField, mesh: Any, points_per_face: int, seed: int,
                       progress: ProgressFn) -> Any:
        """(faces, 448) float32: the part field averaged over random points on each face."""
        import numpy as np
        import torch
        import trimesh

        vertices = _normalized(np.asarray(mesh.vertices, dtype=np.float64))
        progress(0.05, f"sampling {SURFACE_POINTS} surface points")
        surface = trimesh.Trimesh(vertices, mesh.faces, process=False)
        points, _ = trimesh.sample.sample_surface(surface, SURFACE_POINTS, seed=seed)
        device = self.torch_device
        pc = torch.as_tensor(np.asarray(points), dtype=torch.float32, device=device).unsqueeze(0)
        on_cuda = device.startswith("cuda")
        generator = self.generator(seed)
        corners = torch.as_tensor(vertices[np.asarray(mesh.faces)], dtype=torch.float32, device=device)  # (F, 3, 3)
        per_chunk = max(1, int(loaded.cfg.n_sample_each) // points_per_face)
        total = len(corners)
        chunks: list[Any] = []
        reported = -1
        mixed = torch.autocast("cuda", dtype=torch.float16) if on_cuda else contextlib.nullcontext()
        with torch.no_grad(), mixed:
            progress(0.1, "computing the feature field")
            planes = loaded.model.triplane_transformer(loaded.model.pvcnn(pc, pc))
            part_planes = torch.split(planes, [SDF_CHANNELS, planes.shape[2] - SDF_CHANNELS], dim=2)[1]
            del planes
            for start in range(0, total, per_chunk):
                tri = corners[start:start + per_chunk]
                # Uniform points on each triangle: the square root of one uniform number for the distance from
                # the first corner, another for the place along the opposite edge.
                r1 = torch.rand((len(tri), points_per_face, 1), generator=generator, device=device).sqrt()
                r2 = torch.rand((len(tri), points_per_face, 1), generator=generator, device=device)
                samples = (1 - r1) * tri[:, None, 0] + r1 * (1 - r2) * tri[:, None, 1] + r1 * r2 * tri[:, None, 2]
                feat = loaded.sample_triplane_feat(part_planes, samples.reshape(1, -1, 3))
                chunks.append(feat.reshape(len(tri), points_per_face, -1).float().mean(dim=1).cpu().numpy())
                done = start + len(tri)
                if int(50 * done / total) != reported:
                    reported = int(50 * done / total)
                    progress(0.12 + 0.58 * done / total, f"face features: {done}/{total}")
            del part_planes
        out = np.concatenate(chunks).astype(np.float32, copy=False)
        if on_cuda:
            torch.cuda.empty_cache()
        return out


# -- inputs ----------------------------------------------------------------------------------------------------------


def _config_file(spec: ModelSpec) -> Path | None:
    named = spec.options.get("config")
    if named:
        path = Path(str(named)).expanduser()
        return path if path.is_file() else None
    source = spec.options.get("source")
    for folder in (source if isinstance(source, list) else [source] if source else []):
        path = Path(str(folder)).expanduser() / CONFIG
        if path.is_file():
            return path
    return None


def _normalized(vertices: Any) -> Any:
    """Centred on the bounding box and scaled so its longest side spans [-0.9, 0.9] (Demo_Dataset.get_model)."""
    import numpy as np

    low, high = vertices.min(axis=0), vertices.max(axis=0)
    scale = 2.0 * 0.9 / max(float((high - low).max()), 1e-12)
    return ((vertices - (low + high) / 2) * scale).astype(np.float32)


# -- clustering ------------------------------------------------------------------------------------------------------


def face_adjacency(vertices: Any, faces: Any) -> Any:
    """Sparse (F, F) graph of faces sharing an edge (vertices welded by position), with the separate pieces joined
    into one: a minimum spanning tree over the pieces' centres (each piece represented by its face nearest to its
    centre), along the ten nearest pieces."""
    import numpy as np
    import scipy.sparse as sp
    import trimesh
    from scipy.sparse import csgraph
    from scipy.spatial import cKDTree

    from pocket3d.geometry.meshes import weld

    welded = weld(vertices, faces)
    n = len(welded.faces)
    pairs = trimesh.graph.face_adjacency(faces=welded.faces).astype(np.int64).reshape(-1, 2)
    rows, cols = [pairs[:, 0]], [pairs[:, 1]]
    graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    count, piece = csgraph.connected_components(graph, directed=False)
    if count > 1:
        centres = welded.vertices[welded.faces].mean(axis=1)
        sizes = np.bincount(piece, minlength=count)
        middle = np.zeros((count, 3))
        np.add.at(middle, piece, centres)
        middle /= sizes[:, None]
        # each piece's face nearest to the piece's centre
        distance = np.linalg.norm(centres - middle[piece], axis=1)
        order = np.lexsort((distance, piece))
        first = order[np.r_[True, piece[order][1:] != piece[order][:-1]]]
        reps = np.empty(count, np.int64)
        reps[piece[first]] = first
        k = min(10, count - 1) + 1
        dist, near = cKDTree(middle).query(middle, k=k)
        a = np.repeat(np.arange(count), k)
        b = near.reshape(-1)
        d = dist.reshape(-1)
        keep = a != b
        knn = sp.coo_matrix((d[keep] + 1e-12, (a[keep], b[keep])), shape=(count, count))
        tree = csgraph.minimum_spanning_tree(knn.maximum(knn.T)).tocoo()
        links_a, links_b = list(tree.row), list(tree.col)
        groups, group = csgraph.connected_components(tree, directed=False)
        if groups > 1:  # the nearest-neighbour graph was not connected: chain what is left
            heads = np.unique(group, return_index=True)[1]
            links_a += list(heads[:-1])
            links_b += list(heads[1:])
        rows.append(reps[np.asarray(links_a, np.int64)])
        cols.append(reps[np.asarray(links_b, np.int64)])
    r, c = np.concatenate(rows), np.concatenate(cols)
    adjacency = sp.coo_matrix((np.ones(2 * len(r)), (np.r_[r, c], np.r_[c, r])), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0
    return adjacency


def cluster_faces(features: Any, adjacency: Any, method: str, num_parts: int | None, areas: Any,
                  seed: int = 0) -> Any:
    """Labels 0..k-1 per face, part 0 the largest by area."""
    import numpy as np

    n = len(features)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.clip(norms, 1e-12, None)
    if n < 2 or num_parts == 1:
        return np.zeros(n, np.int64)
    if method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        # One tree, cut at each count asked (as run_part_clustering.py cuts it at 20 down to 1).
        children = AgglomerativeClustering(n_clusters=1, connectivity=adjacency, linkage="ward").fit(unit).children_
        if num_parts is None:
            num_parts = _best_count(unit, lambda k: cut_tree(children, n, k),
                                    range(2, min(MAX_PARTS, n - 1) + 1), seed)
        labels = cut_tree(children, n, num_parts)
    else:
        from sklearn.cluster import KMeans

        if num_parts is None:  # the count is chosen on a sample of faces: 19 fits on every face cost too much
            rng = np.random.default_rng(seed)
            sample = unit[rng.choice(n, min(n, SILHOUETTE_SAMPLE), replace=False)]
            num_parts = _best_count(
                sample, lambda k: KMeans(n_clusters=k, random_state=seed, n_init="auto").fit(sample).labels_,
                range(2, min(MAX_PARTS, len(sample) - 1) + 1), seed)
        labels = KMeans(n_clusters=num_parts, random_state=seed, n_init="auto").fit(unit).labels_
    return _by_area(np.asarray(labels), np.asarray(areas, dtype=float))


def cut_tree(children: Any, n: int, k: int) -> Any:
    """The leaves' clusters once the first ``n - k`` merges of an agglomerative tree (sklearn's ``children_``:
    merge i makes node ``n + i``) are applied."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse import csgraph

    merges = max(0, n - k)
    parents = n + np.arange(merges)
    rows = np.r_[children[:merges, 0], children[:merges, 1]]
    cols = np.r_[parents, parents]
    size = n + merges
    graph = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))
    _, component = csgraph.connected_components(graph, directed=False)
    return np.unique(component[:n], return_inverse=True)[1]


def _best_count(unit: Any, labels_for: Any, counts: range, seed: int) -> int:
    """The count whose clustering has the best silhouette score (on a sample of at most 3000 faces)."""
    import numpy as np
    from sklearn.metrics import silhouette_score

    best, best_score = 1, -np.inf
    sample = min(len(unit), SILHOUETTE_SAMPLE)
    for k in counts:
        labels = np.asarray(labels_for(k))
        if len(np.unique(labels)) < 2:
            continue
        score = silhouette_score(unit, labels, sample_size=sample, random_state=seed)
        if score > best_score:
            best, best_score = k, score
    return best


def _by_area(labels: Any, areas: Any) -> Any:
    import numpy as np

    ids, compact = np.unique(labels, return_inverse=True)
    area = np.bincount(compact, weights=areas, minlength=len(ids))
    rank = np.empty(len(ids), np.int64)
    rank[np.argsort(-area, kind="stable")] = np.arange(len(ids))
    return rank[compact]
