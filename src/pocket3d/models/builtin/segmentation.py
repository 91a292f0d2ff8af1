"""Built-in part segmentation: classical geometry, no learned model.

The mesh is welded by position (OBJ files split vertices at UV seams) to find which faces share an edge; the
labels are per face of the input mesh, in its order. The segmented GLB keeps the input's faces and UVs, grouped
into one node per part (each part's faces in input order). A closed
piece whose signed volume is negative is inside out, and its normals are turned for measuring.

1. Connected components: pieces that share no edge are separate parts to start with.
2. Each piece is cut by the method that suits it; ``auto`` measures the piece and picks:
   - ``sharp_edges``, for CAD-like unions of primitives: the faces are split along concave edges sharper than
     25 degrees (where one primitive enters another). Auto picks it where most (60%, by area) of the piece's
     concave bends are that sharp (a union's are all sharp; a generated mesh's, a fifth; a smooth one's, none)
     and the cut leaves at least two pieces of 2% of its area or more.
   - ``curvature``, for smooth blended shapes (Hoffman and Richards' minima rule: parts meet along lines of
     negative curvature). The minimum principal curvature at a vertex is the smallest normal curvature along
     its edges, (n_i - n_j)·(p_i - p_j) / |p_i - p_j|², averaged onto faces. Convex regions of 1% of the piece
     or more seed parts; the creases between are shared out by a seeded watershed (the minimum spanning forest
     of the face graph weighted by concavity, cut where it is most concave); then touching parts whose shared
     boundary is not concave enough on average are merged, weakest first.
   - ``skeleton``, for limbs whose joints show no crease: the piece is voxelised (64 voxels along its longest
     side at medium quality), thinned to a curve skeleton (skimage), and each branch that ends in a tip and
     reaches out of its junction's inscribed ball by more than its own thickness is a limb. Faces take the
     part of the nearest skeleton voxel; boundaries are then moved onto the most concave faces nearby by the
     same watershed. Auto runs it on the eight largest smooth pieces and keeps it where it finds more parts
     than the curvature did.
3. Parts under 0.3% of the total area (specks, slivers, degenerate faces) join the neighbour they share the
   longest boundary with, or, touching none, the nearest one.
4. ``num_parts``: while there are too many, the smallest part joins its neighbour as in 3; while too few, the
   largest is cut in two between a face far from its middle and the face geodesically farthest from that, at
   the most concave line, with a preference for the middle where there is no crease.

Where it fails: the thresholds were tuned on synthetic shapes and three generated meshes, and none of the
methods knows what a part means (a head blended smoothly into a torso is one part to all three). Sharp edges
find nothing on smooth or generated meshes, and cannot separate primitives whose faces are coplanar (an L of
two boxes has one top face). Curvature finds nothing on CAD meshes, whose long thin triangles make vertex
normals meaningless, and merges parts joined without a crease. The skeleton needs a surface closed at the
voxel size, thins flat shapes into sheets, misses limbs thinner than about two voxels or held close to the body
(arms against a torso), finds only one level (a hand is part of its arm), and gives only the nearest-voxel
answer along the limb's length, so its results move a little with the voxel grid (quality). Cuts made for
``num_parts`` in a region without creases follow the triangulation's noise and are ragged.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
import trimesh
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage
from scipy.sparse import csgraph
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from pocket3d.geometry.gltf_writer import write_face_labels, write_segmented_glb
from pocket3d.geometry.meshes import one_mesh, weld
from pocket3d.geometry.validate import load_scene
from pocket3d.formats import formats_for
from pocket3d.models.builtin import builtin_spec
from pocket3d.models.spec import Feature, InputRejected, ModelAdapter, ProgressFn, RunInputs

log = logging.getLogger(__name__)

Method = Literal["auto", "components", "sharp_edges", "curvature", "skeleton"]
METHODS = ("components", "sharp_edges", "curvature", "skeleton")  # what made a part; "auto" picks one of these

SHARP_ANGLE = np.radians(25.0)  # a concave edge sharper than this separates parts (sharp_edges)
FLAT_ANGLE = np.radians(0.01)  # an edge this flat lies inside a planar face
CAD_SHARP_SHARE = 0.6  # a component is CAD-like when this share of its concave bends are sharp
# Curvatures are in units of 1 / (the radius of the sphere with the component's area).
SEED_CURVATURE = 0.5  # faces with min curvature below -this are in a crease, not in a seed
CREASE_CURVATURE = 1.5  # parts whose boundary is less concave than this on average are merged
SEED_SHARE = 0.01  # a convex region must cover this share of its component to seed a part
TINY_SHARE = 0.003  # parts under this share of the total area are merged into a neighbour
SIGNIFICANT_SHARE = 0.02  # a method has found parts when at least two cover this share of the component each
MAX_SKELETONS = 8  # auto thins at most this many pieces (the largest): each costs a voxel grid
BALANCE = 3.0  # how much a split prefers the middle to a crease: a crease this concave or more wins
SKELETON_GRID = {"low": 48, "medium": 64, "high": 96}  # voxels along the longest side, by quality


class SegmentationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_parts: int | None = Field(None, ge=2, le=64, description="exact number of parts wanted (the mesh must "
                                  "have at least that many faces); default: as many as the method finds")
    method: Method = Field("auto", description="components: connected pieces only; sharp_edges: cut along "
                           "concave sharp edges (CAD-like unions); curvature: cut along concave creases (smooth "
                           "blended shapes); skeleton: limbs from a curve skeleton; auto: measured per piece")


class GeometricSegmentationModel(ModelAdapter):
    """Built-in CPU part segmentation (components, sharp edges, curvature, skeleton); no weights."""

    Params = SegmentationParams
    default_spec = builtin_spec(
        "builtin_segmentation", Feature.SEGMENTATION, {"mesh"}, formats_for(Feature.SEGMENTATION),
        "Built-in CPU baseline: connected components, then sharp concave edges or curvature regions or skeleton "
        "branches")

    def run(self, inputs: RunInputs, params: SegmentationParams, progress: ProgressFn) -> dict[str, Path]:
        if inputs.mesh is None:
            raise InputRejected("segmentation needs a mesh")
        progress(0.02, "loading the mesh")
        mesh = one_mesh(load_scene(inputs.mesh, inputs.mesh.suffix.lstrip(".").lower()))
        result = segment(mesh.vertices, mesh.faces, num_parts=params.num_parts, method=params.method,
                         grid=SKELETON_GRID.get(inputs.quality, 64), progress=progress)
        progress(0.9, f"writing {result.count} parts ({', '.join(sorted(set(result.part_methods)))})")
        glb = inputs.work_dir / "segmented.glb"
        write_segmented_glb(mesh, result.labels, glb)
        labels = inputs.work_dir / "labels.json"
        write_face_labels(result.labels, labels,
                          extras={i: {"method": method} for i, method in enumerate(result.part_methods)})
        return {"mesh": glb, "labels": labels}


# -- the face graph ----------------------------------------------------------------------------------------------

@dataclass
class FaceGraph:
    """Faces of the welded mesh and the edges between faces that share a mesh edge."""

    vertices: np.ndarray  # (V, 3) welded
    faces: np.ndarray  # (F, 3) into the welded vertices, in the input's face order
    areas: np.ndarray  # (F,)
    normals: np.ndarray  # (F, 3) unit; zero for degenerate faces
    centers: np.ndarray  # (F, 3)
    pairs: np.ndarray  # (E, 2) faces sharing an edge
    edge_vertices: np.ndarray  # (E, 2) the welded vertices of that edge
    angles: np.ndarray  # (E,) dihedral angle: 0 where flat
    concave: np.ndarray  # (E,) bool: the surface folds inwards there
    component: np.ndarray  # (F,) connected component of each face
    component_area: np.ndarray  # (C,)

    @classmethod
    def build(cls, vertices: np.ndarray, faces: np.ndarray) -> FaceGraph:
        joined = weld(vertices, faces)
        vertices, faces = joined.vertices, joined.faces
        corners = vertices[faces]
        cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        length = np.linalg.norm(cross, axis=1)
        areas = length / 2
        normals = np.divide(cross, length[:, None], out=np.zeros_like(cross), where=length[:, None] > 0)
        # Edges of exactly two faces; a non-manifold edge joins nothing (which faces belong together is unknown).
        pairs, edge_vertices = trimesh.graph.face_adjacency(faces=faces, return_edges=True)
        pairs = pairs.astype(np.int64)
        n = len(faces)
        graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        count, component = csgraph.connected_components(graph, directed=False)
        normals *= _outward(corners, cross, pairs, component, count)[component, None]
        na, nb = normals[pairs[:, 0]], normals[pairs[:, 1]]
        angles = np.arccos(np.clip(np.einsum("ij,ij->i", na, nb), -1.0, 1.0))
        angles[(areas[pairs[:, 0]] == 0) | (areas[pairs[:, 1]] == 0)] = 0.0
        # The corner of face b off the shared edge lies above face a's plane where the surface folds inwards.
        fb = faces[pairs[:, 1]]
        off_edge = (fb != edge_vertices[:, :1]) & (fb != edge_vertices[:, 1:])
        apex = fb[np.arange(len(fb)), off_edge.argmax(axis=1)]
        rise = np.einsum("ij,ij->i", vertices[apex] - vertices[edge_vertices[:, 0]], na)
        return cls(vertices, faces, areas, normals, corners.mean(axis=1), pairs, edge_vertices, angles, rise > 0,
                   component, np.bincount(component, weights=areas, minlength=count))

    @property
    def size(self) -> int:
        return len(self.faces)

    @functools.cached_property
    def curvature(self) -> np.ndarray:
        """Per face, the minimum principal curvature in units of the equivalent radius (see min_curvature)."""
        return min_curvature(self)

    def equivalent_radius(self) -> np.ndarray:
        """Per face, the radius of the sphere with its component's area: the scale curvature is measured in."""
        return np.sqrt(self.component_area / (4 * np.pi))[self.component]


def _outward(corners: np.ndarray, cross: np.ndarray, pairs: np.ndarray, component: np.ndarray,
             count: int) -> np.ndarray:
    """Per component, -1 where it is closed and inside out (negative signed volume), else 1: concave and convex
    swap on an inside-out mesh. An open piece has no inside to tell, and is taken as it is."""
    volume = np.bincount(component, weights=np.einsum("ij,ij->i", corners[:, 0], cross), minlength=count)
    faces = np.bincount(component, minlength=count)
    closed = 2 * np.bincount(component[pairs[:, 0]], minlength=count) == 3 * faces  # every edge has 2 faces
    return np.where(closed & (volume < 0), -1.0, 1.0)


# -- segmentation -----------------------------------------------------------------------------------------------

@dataclass
class Segmentation:
    labels: np.ndarray  # (F,) 0..count-1, part 0 the largest by area
    part_methods: list[str]  # the method that made each part

    @property
    def count(self) -> int:
        return len(self.part_methods)


def segment(vertices: np.ndarray, faces: np.ndarray, *, num_parts: int | None = None, method: Method = "auto",
            grid: int = 64, progress: ProgressFn | None = None) -> Segmentation:
    """Part labels for each face of the mesh (see the module docstring)."""
    report = progress or (lambda fraction, message: None)
    if len(faces) == 0:
        raise InputRejected("the mesh has no faces")
    report(0.05, f"building the face graph of {len(faces)} faces")
    graph = FaceGraph.build(vertices, faces)
    if graph.areas.sum() <= 0:
        raise InputRejected("the mesh has no area: every face is degenerate")
    report(0.15, f"{int((graph.component_area > 0).sum())} connected pieces")
    labels, face_methods = _by_method(graph, method, grid, report)
    report(0.75, "merging parts too small to keep")
    labels = merge_tiny(graph, labels, TINY_SHARE * graph.areas.sum())
    if num_parts is not None:
        report(0.8, f"adjusting to {num_parts} parts")
        labels = adjust_count(graph, labels, num_parts)
    return _ordered(graph, labels, face_methods)


def _by_method(graph: FaceGraph, method: Method, grid: int, report: ProgressFn) -> tuple[np.ndarray, np.ndarray]:
    """Labels per face, and per face the method that made its label (an index into METHODS)."""
    components = graph.component
    if method == "components":
        return components, np.zeros(graph.size, np.int64)
    total = graph.areas.sum()
    worth_cutting = graph.component_area >= TINY_SHARE * total  # smaller pieces are merged away anyway
    candidates: dict[str, np.ndarray] = {}
    if method in ("auto", "sharp_edges"):
        report(0.2, "cutting along sharp concave edges")
        candidates["sharp_edges"] = sharp_edge_labels(graph)
    if method in ("auto", "curvature", "skeleton"):
        report(0.35, "measuring curvature")
        candidates["curvature"] = curvature_labels(graph)
    if method == "auto":
        cad_like = ((_sharp_concave_share(graph) >= CAD_SHARP_SHARE)
                    & (_significant_parts(graph, candidates["sharp_edges"]) >= 2))
        chosen = np.where(cad_like, METHODS.index("sharp_edges"), METHODS.index("curvature"))
        # The skeleton is tried on the larger smooth pieces, and kept where it finds more parts (limbs whose
        # joints have no crease the curvature could see).
        thin = ~cad_like & (graph.component_area >= SIGNIFICANT_SHARE * total)
        thin[np.argsort(-graph.component_area)[MAX_SKELETONS:]] = False
        if thin.any():
            limbs = _skeleton_all(graph, thin, grid, report)
            more = _significant_parts(graph, limbs) > _significant_parts(graph, candidates["curvature"])
            chosen[thin & more] = METHODS.index("skeleton")
            candidates["skeleton"] = _refined(graph, limbs, thin & more)
    else:
        chosen = np.full(len(graph.component_area), METHODS.index(method))
        if method == "skeleton":
            thin = worth_cutting & (graph.component_area >= SIGNIFICANT_SHARE * total)
            candidates["skeleton"] = _refined(graph, _skeleton_all(graph, thin, grid, report), thin)
            del candidates["curvature"]
    chosen[~worth_cutting] = METHODS.index("components")
    for name, found in candidates.items():  # a piece the method did not cut is that piece, as it was
        uncut = (chosen == METHODS.index(name)) & (_significant_parts(graph, found) < 2)
        chosen[uncut] = METHODS.index("components")
    labels = components.copy()
    offset = labels.max() + 1
    for name, found in candidates.items():  # each method numbers its labels from 0: keep them apart
        use = chosen[components] == METHODS.index(name)
        labels[use] = found[use] + offset
        offset += found.max() + 1
    face_counts = np.bincount(components, minlength=len(chosen))
    for index in np.flatnonzero(chosen > 0):
        log.info("piece %d (%d faces): %s", index, face_counts[index], METHODS[chosen[index]])
    return _compact(labels), chosen[components]


def _sharp_concave_share(graph: FaceGraph) -> np.ndarray:
    """Per component, the share of its bent concave edges that are sharp, weighted by the faces' area. CAD
    unions: all of them (where primitives meet; curved primitives bend convexly); generated meshes: a fifth
    (noise); smooth meshes: almost none. Subdivision and flat triangulations do not change it."""
    comp = graph.component[graph.pairs[:, 0]]
    count = len(graph.component_area)
    weight = graph.areas[graph.pairs].sum(axis=1) * (graph.concave & (graph.angles > FLAT_ANGLE))
    total = np.bincount(comp, weights=weight, minlength=count)
    sharp = np.bincount(comp, weights=weight * (graph.angles > SHARP_ANGLE), minlength=count)
    return sharp / np.maximum(total, 1e-300)


def _significant_parts(graph: FaceGraph, labels: np.ndarray) -> np.ndarray:
    """Per component, how many of its labels cover at least SIGNIFICANT_SHARE of its area."""
    inverse = _compact(labels)
    area = np.bincount(inverse, weights=graph.areas)
    owner = np.zeros(len(area), np.int64)
    owner[inverse] = graph.component
    share = area / np.maximum(graph.component_area[owner], 1e-300)
    return np.bincount(owner[share >= SIGNIFICANT_SHARE], minlength=len(graph.component_area))


# -- sharp edges ------------------------------------------------------------------------------------------------

def sharp_edge_labels(graph: FaceGraph) -> np.ndarray:
    """Connected regions once the concave edges sharper than SHARP_ANGLE are cut."""
    keep = ~(graph.concave & (graph.angles > SHARP_ANGLE))
    return _regions(graph.size, graph.pairs[keep])


def _regions(n: int, pairs: np.ndarray) -> np.ndarray:
    adjacency = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return csgraph.connected_components(adjacency, directed=False)[1]


# -- curvature --------------------------------------------------------------------------------------------------

def min_curvature(graph: FaceGraph) -> np.ndarray:
    """Per face, the minimum principal curvature (negative in creases) times its component's equivalent radius.

    Along an edge (i, j) the normal curvature is about (n_i - n_j)·(p_i - p_j) / |p_i - p_j|²; the smallest over
    a vertex's edges samples its minimum principal curvature. Faces average their vertices, then their
    neighbours once, which quietens the triangulation noise of marching-cubes and generated meshes."""
    v, f = graph.vertices, graph.faces
    weighted = np.repeat(graph.normals * graph.areas[:, None], 3, axis=0)
    vertex_normals = np.column_stack([np.bincount(f.reshape(-1), weights=weighted[:, k], minlength=len(v))
                                      for k in range(3)])
    vertex_normals /= np.maximum(np.linalg.norm(vertex_normals, axis=1), 1e-30)[:, None]
    i, j = graph.edge_vertices[:, 0], graph.edge_vertices[:, 1]
    delta = v[i] - v[j]
    squared = np.einsum("ij,ij->i", delta, delta)
    # Edges much shorter than usual (marching-cubes slivers) would divide normal noise by almost nothing.
    floor = max((0.5 * np.median(np.sqrt(squared))) ** 2, 1e-30) if len(squared) else 1.0
    curvature = np.einsum("ij,ij->i", vertex_normals[i] - vertex_normals[j], delta) / np.maximum(squared, floor)
    vertex_min = np.full(len(v), np.inf)
    np.minimum.at(vertex_min, i, curvature)
    np.minimum.at(vertex_min, j, curvature)
    vertex_min[~np.isfinite(vertex_min)] = 0.0
    face = vertex_min[f].mean(axis=1) * graph.equivalent_radius()
    return _smooth(graph, face)


def _smooth(graph: FaceGraph, values: np.ndarray) -> np.ndarray:
    n = graph.size
    p = graph.pairs
    a = sp.coo_matrix((np.ones(2 * len(p)), (np.r_[p[:, 0], p[:, 1]], np.r_[p[:, 1], p[:, 0]])), shape=(n, n))
    a = a.tocsr() + sp.identity(n, format="csr")
    return (a @ values) / np.asarray(a.sum(axis=1)).reshape(-1)


def curvature_labels(graph: FaceGraph) -> np.ndarray:
    """Convex regions covering SEED_SHARE of their component seed parts; the creases between go to the seed
    they are joined to across the least concave path (a seeded watershed); then neighbours whose shared
    boundary is not concave enough on average are merged. A component with no seed is one part."""
    convex = graph.curvature > -SEED_CURVATURE
    inside = convex[graph.pairs[:, 0]] & convex[graph.pairs[:, 1]]
    regions = _regions(graph.size, graph.pairs[inside])
    area = np.bincount(regions, weights=graph.areas)
    seeded = convex & (area[regions] >= SEED_SHARE * graph.component_area[graph.component])
    heights = _concavity_heights(graph)
    labels = watershed(graph.size, graph.pairs, heights, np.where(seeded, regions, -1))
    unseeded = labels < 0  # a piece with no seed is one part
    labels[unseeded] = regions.max() + 1 + graph.component[unseeded]
    return merge_weak_boundaries(graph, labels, heights, CREASE_CURVATURE)


def merge_weak_boundaries(graph: FaceGraph, labels: np.ndarray, heights: np.ndarray, threshold: float) -> np.ndarray:
    """Merge, weakest first, neighbouring labels whose boundary's length-weighted mean height is below
    ``threshold``. Each round looks only at the pairs of touching labels, so it costs little."""
    labels = _compact(labels)
    count = labels.max() + 1
    p = graph.pairs
    on_boundary = labels[p[:, 0]] != labels[p[:, 1]]
    ev = graph.edge_vertices[on_boundary]
    edge_length = np.linalg.norm(graph.vertices[ev[:, 0]] - graph.vertices[ev[:, 1]], axis=1)
    # One row per pair of touching labels: their boundary's length and its height summed along it.
    la, lb = labels[p[on_boundary, 0]], labels[p[on_boundary, 1]]
    key, inverse = np.unique(np.minimum(la, lb) * count + np.maximum(la, lb), return_inverse=True)
    ends = np.column_stack([key // count, key % count])
    length = np.bincount(inverse, weights=edge_length)
    weighted = np.bincount(inverse, weights=edge_length * heights[on_boundary])
    group = np.arange(count)
    while True:
        a, b = group[ends[:, 0]], group[ends[:, 1]]
        differ = a != b
        if not differ.any():
            break
        lo, hi = np.minimum(a, b)[differ], np.maximum(a, b)[differ]
        key, inverse = np.unique(lo * len(group) + hi, return_inverse=True)
        strength = (np.bincount(inverse, weights=weighted[differ]) /
                    np.maximum(np.bincount(inverse, weights=length[differ]), 1e-30))
        weakest = int(np.argmin(strength))
        if strength[weakest] >= threshold:
            break
        keep, gone = divmod(int(key[weakest]), len(group))
        group[group == gone] = keep
    return _compact(group[labels])


def _concavity_heights(graph: FaceGraph) -> np.ndarray:
    """Per face-graph edge: how concave it is, the height the watershed splits regions at."""
    return -np.minimum(graph.curvature[graph.pairs[:, 0]], graph.curvature[graph.pairs[:, 1]])


def watershed(n: int, pairs: np.ndarray, heights: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Every node joins the seed it reaches over the lowest pass (``seeds``: a label per node, -1 for none).

    The minimum spanning forest with all seeds tied to one extra root: cut at the root, each tree holds exactly
    one seed, because a path between two seeds costs more than their two links to the root. Nodes in a piece
    with no seed get -1."""
    weights = heights - heights.min() + 1.0 if len(heights) else heights  # > 0: sparse graphs drop zeros
    seeded = np.flatnonzero(seeds >= 0)
    root = n
    rows = np.r_[pairs[:, 0], seeded]
    cols = np.r_[pairs[:, 1], np.full(len(seeded), root)]
    links = sp.coo_matrix((np.r_[weights, np.full(len(seeded), 0.5)], (rows, cols)), shape=(n + 1, n + 1))
    forest = csgraph.minimum_spanning_tree(links.tocsr()).tocoo()
    keep = (forest.row != root) & (forest.col != root)
    trees = _regions(n, np.column_stack([forest.row[keep], forest.col[keep]]))
    tree_seed = np.full(trees.max() + 1, -1)
    tree_seed[trees[seeded]] = seeds[seeded]
    return tree_seed[trees]


def _subgraph(graph: FaceGraph, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The face-graph edges among ``faces``: their indices into graph.pairs, and their ends numbered as
    positions in ``faces``."""
    local = np.full(graph.size, -1)
    local[faces] = np.arange(len(faces))
    ends = local[graph.pairs]
    edges = np.flatnonzero((ends[:, 0] >= 0) & (ends[:, 1] >= 0))
    return edges, ends[edges]


# -- skeleton ---------------------------------------------------------------------------------------------------

def _skeleton_all(graph: FaceGraph, pieces: np.ndarray, grid: int, report: ProgressFn) -> np.ndarray:
    """Skeleton labels for the components where ``pieces`` is true; a component without limbs is one part."""
    labels = graph.component.copy()
    offset = labels.max() + 1
    todo = np.flatnonzero(pieces)
    for step, index in enumerate(todo):
        report(0.5 + 0.25 * step / len(todo), f"skeleton of piece {index}")
        faces = np.flatnonzero(graph.component == index)
        found = skeleton_labels(graph, faces, grid)
        if found is None:
            continue
        labels[faces] = found + offset
        offset += found.max() + 1
    return labels


def _refined(graph: FaceGraph, labels: np.ndarray, pieces: np.ndarray) -> np.ndarray:
    """The labels with their boundaries moved onto creases (see _refine) in the components where ``pieces``
    is true and there is a boundary to move."""
    labels = labels.copy()
    for index in np.flatnonzero(pieces):
        faces = np.flatnonzero(graph.component == index)
        labels[faces] = _refine(graph, faces, labels[faces])
    return labels


def skeleton_labels(graph: FaceGraph, faces: np.ndarray, grid: int) -> np.ndarray | None:
    """Per face in ``faces``: 0 for the body, 1.. for each limb the curve skeleton finds; None without limbs
    (or without a closed volume to thin)."""
    volume, origin, pitch = _voxelise(graph, faces, grid)
    if volume is None:
        return None
    skeleton = skeletonize(volume).astype(bool)
    points = np.argwhere(skeleton)
    if len(points) < 3:
        return None
    radius = ndimage.distance_transform_edt(volume)[tuple(points.T)]
    voxel_labels = _limbs(points, radius)
    if voxel_labels.max() == 0:
        return None
    # Every voxel takes the label of its nearest skeleton voxel; a face, that of the voxel half a step inside it.
    skeleton_grid = np.zeros(volume.shape, bool)
    skeleton_grid[tuple(points.T)] = True
    nearest = ndimage.distance_transform_edt(~skeleton_grid, return_distances=False, return_indices=True)
    index_grid = -np.ones(volume.shape, np.int64)
    index_grid[tuple(points.T)] = np.arange(len(points))
    inward = graph.centers[faces] - graph.normals[faces] * pitch * 0.5
    cell = np.clip(np.floor((inward - origin) / pitch).astype(np.int64), 0, np.array(volume.shape) - 1)
    owner = index_grid[tuple(nearest[:, cell[:, 0], cell[:, 1], cell[:, 2]])]
    return voxel_labels[owner]


def _voxelise(graph: FaceGraph, faces: np.ndarray, grid: int) -> tuple[np.ndarray | None, np.ndarray, float]:
    """A filled voxel volume of the faces, padded by two voxels: surface points splatted, holes filled."""
    lo = graph.vertices[graph.faces[faces]].reshape(-1, 3).min(axis=0)
    hi = graph.vertices[graph.faces[faces]].reshape(-1, 3).max(axis=0)
    pitch = float((hi - lo).max()) / grid
    if pitch <= 0:
        return None, lo, 1.0
    origin = lo - 2 * pitch
    shape = np.ceil((hi - lo) / pitch).astype(np.int64) + 5
    piece = trimesh.Trimesh(graph.vertices, graph.faces[faces], process=False)
    count = int(np.clip(3 * graph.areas[faces].sum() / pitch**2, 10_000, 300_000))  # ~3 per voxel crossed
    points, _ = trimesh.sample.sample_surface(piece, count, seed=0)
    cells = np.clip(np.floor((points - origin) / pitch).astype(np.int64), 0, shape - 1)
    shell = np.zeros(shape, bool)
    shell[tuple(cells.T)] = True
    # Sampled surface voxels leave diagonal gaps the outside leaks through: thicken the shell by a voxel to
    # fill it, then take the voxel back.
    cube = np.ones((3, 3, 3), bool)
    filled = ndimage.binary_fill_holes(ndimage.binary_dilation(shell, cube))
    volume = ndimage.binary_erosion(filled, cube) | shell
    if volume.sum() < 1.5 * shell.sum():  # nothing inside: an open surface or a sheet
        return None, origin, pitch
    return volume, origin, pitch


_OFFSETS = np.array([(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
                     if (dx, dy, dz) > (0, 0, 0)])


def _limbs(points: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Per skeleton voxel: 0 for the body, 1.. for each limb. A limb is a branch from a junction to a tip whose
    part outside the junction's inscribed ball is longer than it is thick; its voxels inside that ball belong
    to the body."""
    n = len(points)
    shape = points.max(axis=0) + 3
    lookup = -np.ones(shape, np.int64)
    shifted = points + 1
    lookup[tuple(shifted.T)] = np.arange(n)
    rows, cols = [], []
    for offset in _OFFSETS:
        other = lookup[tuple((shifted + offset).T)]
        ok = other >= 0
        rows.append(np.flatnonzero(ok))
        cols.append(other[ok])
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    adjacency = sp.coo_matrix((np.ones(len(rows_all)), (rows_all, cols_all)), shape=(n, n)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.int8)
    degree = np.asarray(adjacency.sum(axis=1)).reshape(-1)
    junction = degree >= 3
    tip = degree == 1
    # Branches: the skeleton with its junction voxels taken out.
    plain = ~junction
    sub = adjacency[plain][:, plain]
    _, branch_of_plain = csgraph.connected_components(sub, directed=False)
    branch = -np.ones(n, np.int64)
    branch[plain] = branch_of_plain
    labels = np.zeros(n, np.int64)
    next_label = 1
    coo = adjacency.tocoo()
    for b in np.unique(branch[tip]):
        members = np.flatnonzero(branch == b)
        touching = coo.col[np.isin(coo.row, members) & junction[coo.col]]
        if len(touching) == 0:  # the whole skeleton is one path: no junction to be a limb of
            continue
        joint = touching[np.argmax(radius[touching])]
        ball = radius[joint]
        distance = np.linalg.norm(points[members] - points[joint], axis=1)
        outside = members[distance > ball]
        if len(outside) == 0:
            continue
        protrusion = distance.max() - ball
        if protrusion > max(1.0 * radius[outside].mean(), 2.0):
            labels[outside] = next_label
            next_label += 1
    return labels


def _refine(graph: FaceGraph, faces: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Skeleton labels (per face of ``faces``) moved onto the creases: faces near a label boundary lose their
    label, and the watershed hands them to the side they join over the least concave path."""
    edges, ends = _subgraph(graph, faces)
    boundary = np.unique(ends[labels[ends[:, 0]] != labels[ends[:, 1]]])
    if len(boundary) == 0:
        return labels
    margin = 0.15 * np.sqrt(graph.areas[faces].sum() / (4 * np.pi))
    length = np.linalg.norm(graph.centers[faces[ends[:, 0]]] - graph.centers[faces[ends[:, 1]]], axis=1)
    n = len(faces)
    adjacency = sp.coo_matrix((length + 1e-12, (ends[:, 0], ends[:, 1])), shape=(n, n)).tocsr()
    near = csgraph.dijkstra(adjacency, directed=False, indices=boundary, min_only=True, limit=margin)
    seeds = np.where(np.isfinite(near), -1, labels)
    refined = watershed(n, ends, _concavity_heights(graph)[edges], seeds)
    return np.where(refined >= 0, refined, labels)


# -- tidying and counts -----------------------------------------------------------------------------------------

def _compact(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..k-1 in their order (labels are small non-negative integers: no sort needed)."""
    present = np.bincount(labels) > 0
    return (np.cumsum(present) - 1)[labels]


class _Neighbours:
    """Which parts touch, for merging: the boundary edges between the parts as they are when made (merging makes
    no new ones), and, for parts that touch none, the nearest faces of other pieces (from at most 32 faces per
    connected piece, so thousands of specks cost one small k-d tree)."""

    SAMPLES = 32

    def __init__(self, graph: FaceGraph, labels: np.ndarray):
        p = graph.pairs
        la, lb = labels[p[:, 0]], labels[p[:, 1]]
        differ = la != lb
        ev = graph.edge_vertices[differ]
        self.a, self.b = la[differ], lb[differ]
        self.length = np.linalg.norm(graph.vertices[ev[:, 0]] - graph.vertices[ev[:, 1]], axis=1)
        self.graph, self.labels = graph, labels
        self._near: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def targets(self, group: np.ndarray, parts: np.ndarray) -> np.ndarray:
        """For each of ``parts`` (groups of parts: ``group`` maps a part to its group), the group it shares the
        longest boundary with, else the nearest one; -1 where there is none."""
        count = len(group)
        ga, gb = group[self.a], group[self.b]
        keep = ga != gb
        shared = sp.coo_matrix((np.r_[self.length[keep], self.length[keep]],
                                (np.r_[ga[keep], gb[keep]], np.r_[gb[keep], ga[keep]])), shape=(count, count)).tocsr()
        rows = shared[parts]
        out = np.asarray(rows.argmax(axis=1)).reshape(-1)
        lonely = np.asarray(rows.max(axis=1).todense()).reshape(-1) <= 0
        if lonely.any():
            out[lonely] = self._nearest(group, parts[lonely])
        return out

    def _nearest(self, group: np.ndarray, parts: np.ndarray) -> np.ndarray:
        if self._near is None:
            self._near = self._sample_pairs()
        fa, fb, distance = self._near
        ga, gb = group[self.labels[fa]], group[self.labels[fb]]
        wanted = np.zeros(len(group), bool)
        wanted[parts] = True
        keep = wanted[ga] & (ga != gb)
        ga, gb, distance = ga[keep], gb[keep], distance[keep]
        order = np.lexsort((distance, ga))  # by group, nearest first
        first = order[np.r_[True, ga[order][1:] != ga[order][:-1]]] if len(order) else order
        nearest = np.full(len(group), -1)
        nearest[ga[first]] = gb[first]
        return nearest[parts]

    def _sample_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs of sampled faces on different connected pieces, each with its nearest such neighbours."""
        graph = self.graph
        order = np.argsort(graph.component, kind="stable")
        sorted_component = graph.component[order]
        counts = np.bincount(graph.component)
        rank = np.arange(len(order)) - (np.cumsum(counts) - counts)[sorted_component]
        stride = np.maximum(counts // self.SAMPLES, 1)[sorted_component]
        samples = order[(rank % stride == 0) & (rank // stride < self.SAMPLES)]
        k = min(len(samples), self.SAMPLES + 4)  # so each sample sees at least 4 faces of other pieces
        distance, index = cKDTree(graph.centers[samples]).query(graph.centers[samples], k=k)
        distance, index = distance.reshape(len(samples), k), index.reshape(len(samples), k)
        other = graph.component[samples[index]] != graph.component[samples][:, None]
        rows, cols = np.nonzero(other)
        return samples[rows], samples[index[rows, cols]], distance[rows, cols]


def merge_tiny(graph: FaceGraph, labels: np.ndarray, min_area: float) -> np.ndarray:
    """Parts under ``min_area`` join the neighbour they share the longest boundary with (the nearest part, for
    a piece that touches none). All tiny parts move at once, a few rounds, so thousands cost no loop each."""
    labels = _compact(labels)
    neighbours = _Neighbours(graph, labels)
    count = labels.max() + 1
    part_area = np.bincount(labels, weights=graph.areas, minlength=count)
    group = np.arange(count)
    for _ in range(20):
        area = np.bincount(group, weights=part_area, minlength=count)
        tiny = np.flatnonzero((area < min_area) & (np.bincount(group, minlength=count) > 0))
        if len(tiny) == 0 or (area > 0).sum() <= 1:
            break
        target = neighbours.targets(group, tiny)
        if (target < 0).all():
            break
        moves = sp.coo_matrix((np.ones((target >= 0).sum()), (tiny[target >= 0], target[target >= 0])),
                              shape=(count, count))
        _, joined = csgraph.connected_components(moves, directed=False)
        if joined.max() + 1 == count:
            break
        group = joined[group]
    return _compact(group[labels])


def adjust_count(graph: FaceGraph, labels: np.ndarray, wanted: int) -> np.ndarray:
    """Exactly ``wanted`` parts where the mesh has enough faces: merge the smallest into its best neighbour,
    or cut the largest in two."""
    labels = _compact(labels)
    count = labels.max() + 1
    if count > wanted:
        neighbours = _Neighbours(graph, labels)
        part_area = np.bincount(labels, weights=graph.areas, minlength=count)
        group = np.arange(count)
        for _ in range(count - wanted):
            area = np.bincount(group, weights=part_area, minlength=count)
            area[np.bincount(group, minlength=count) == 0] = np.inf
            smallest = int(np.argmin(area))
            target = int(neighbours.targets(group, np.array([smallest]))[0])
            if target < 0:  # touches nothing and has no neighbour at all: join the largest
                area[smallest] = -np.inf
                target = int(np.argmax(np.where(np.isinf(area), -np.inf, area)))
            group[group == smallest] = target
        labels = _compact(group[labels])
    heights = None
    whole = set()  # parts that could not be cut
    while labels.max() + 1 < wanted:
        count = labels.max() + 1
        area = np.bincount(labels, weights=graph.areas, minlength=count)
        area[np.bincount(labels, minlength=count) < 2] = -1
        area[list(whole)] = -1
        largest = int(np.argmax(area))
        if area[largest] < 0:
            break  # no part has two faces to cut between: the mesh has too few faces
        if heights is None:
            heights = _concavity_heights(graph)
        part = np.flatnonzero(labels == largest)
        half = split_in_two(graph, part, heights)
        if 0 < len(half) < len(part):
            labels = labels.copy()
            labels[half] = count
        else:
            whole.add(largest)
    return labels


def split_in_two(graph: FaceGraph, faces: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """The faces of one half of ``faces``: cut between the two faces farthest apart (geodesically), at the most
    concave line in the middle half. A part in several pieces gives up its largest piece instead."""
    edges, ends = _subgraph(graph, faces)
    n = len(faces)
    pieces = _regions(n, ends)
    if pieces.max() > 0:
        piece_area = np.bincount(pieces, weights=graph.areas[faces])
        return faces[pieces == np.argmax(piece_area)]
    length = np.linalg.norm(graph.centers[faces[ends[:, 0]]] - graph.centers[faces[ends[:, 1]]], axis=1) + 1e-12
    adjacency = sp.coo_matrix((length, (ends[:, 0], ends[:, 1])), shape=(n, n)).tocsr()
    # One end: the face farthest from the middle (in space, which saves a geodesic sweep); the other: the face
    # geodesically farthest from it.
    middle = np.average(graph.centers[faces], axis=0, weights=graph.areas[faces] + 1e-30)
    a = int(np.argmax(np.linalg.norm(graph.centers[faces] - middle, axis=1)))
    from_a = csgraph.dijkstra(adjacency, directed=False, indices=a)
    b = int(np.argmax(from_a))
    from_b = csgraph.dijkstra(adjacency, directed=False, indices=b)
    span = max(from_a[b], 1e-12)
    seeds = np.full(n, -1)
    seeds[from_a < 0.25 * span] = 0
    seeds[from_b < 0.25 * span] = 1
    # Heights: concavity, plus a ridge along the middle so a shape without creases is cut there.
    balance = 1.0 - np.abs(from_a - from_b) / span
    ridge = heights[edges] + BALANCE * balance[ends].mean(axis=1)
    return faces[watershed(n, ends, ridge, seeds) == 1]


def _ordered(graph: FaceGraph, labels: np.ndarray, face_methods: np.ndarray) -> Segmentation:
    """Labels 0..k-1, part 0 the largest; each part's method is the one that made most of its area."""
    labels = _compact(labels)
    count = labels.max() + 1
    area = np.bincount(labels, weights=graph.areas, minlength=count)
    order = np.argsort(-area, kind="stable")
    rank = np.empty(count, np.int64)
    rank[order] = np.arange(count)
    final = rank[labels]
    votes = np.zeros((count, len(METHODS)))
    np.add.at(votes, (final, face_methods), graph.areas)
    return Segmentation(final, [METHODS[m] for m in votes.argmax(axis=1)])
