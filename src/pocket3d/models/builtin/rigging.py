"""Built-in auto-rigging: a skeleton from the shape's medial axis and bone-heat skin weights. Classical, no weights.

1. Volume: the mesh is voxelised by casting Embree rays along every grid row, in all three axes, and counting
   crossings: the winding number (so overlapping closed parts stay solid), the parity where normals disagree;
   a row through a hole abstains, and the axes vote. Enclosed cavities are filled, the largest connected solid
   kept, and opened by one voxel so that thin sheets (a belt, a loincloth) do not sprout branches.
2. Curve skeleton: the solid is thinned to curves (scikit-image ``skeletonize``, Lee's method) and read as a
   graph of 26-neighbours. Thinning keeps every bump as a spur and a flat part as a web of curves, so branches
   are chosen TEASAR-style (Sato et al. 2000): from the root, the skeleton voxel nearest the centre of mass, the
   farthest skeleton voxel not yet covered is joined to the tree by its shortest path, which then covers all
   skeleton voxels within twice its distance to the surface. A branch whose tip hardly sticks out of the ball
   where it joins is a bump: dropped. Junctions a few voxels apart (thinning splits thick ones) are merged.
3. Joints: at the root, the junctions, the tips, and evenly along long chains, within ``max_joints``; every joint
   is a skeleton voxel, so it is inside the shape. Names are ``root`` and ``branch_<chain>_<joint>``.
4. Humanoid: when the shape stands upright on exactly two legs, one on either side, that meet under its centre
   of mass, with a trunk rising from there and two arms leaving the trunk level with each other, one on either
   side, hands off the ground, the joints are laid out by name instead, in fixed proportions along those paths:
   Hips (where the legs meet, the root), Spine, Chest, Neck, Head, and per side Shoulder, UpperArm, LowerArm,
   Hand, UpperLeg, LowerLeg, Foot (``LeftHand``...), with weightless ``HeadTop_End``, ``*Hand_End`` and
   ``*Foot_End`` tips. Other branches (ears, a tail, a weapon) hang off the nearest named joint as ``branch_*``.
   Left is +X: a Y-up character facing +Z (glTF's convention) has its left hand there.
5. Skin weights, bone heat (Baran & Popović 2007): every bone (a joint to its child, owned by the joint, whose
   rotation swings it) heats the surface: (L + M H) w_j = M H p_j, L the cotangent Laplacian, M the vertex
   areas, H = 1/d² towards the nearest bone that the vertex can see (an Embree ray; tried among the three
   nearest), p_j = 1 where that bone is j's. One sparse LU factorisation serves all bones. Negative cotangents
   are clamped to 0 and zero-area faces skipped, so the matrix is an M-matrix: weights are finite, in [0, 1] and
   sum to 1; a connected piece that sees no bone (a loose part, an unused vertex) is heated from its nearest
   bones. The file keeps the four largest per vertex.

The Laplacian runs on a copy welded by position (UV seams split the input's vertices); each output vertex, the
input's own with its UVs, takes its welded twin's weights. Above ``SOLVE_FACES`` faces the weights are solved on
a decimated copy, and every vertex takes those of the copy's nearest vertex.

Up axis: the mesh is Y-up, +Z forward (pocket3d turned it so before this model runs; see geometry.orientation),
so the humanoid reading looks for legs below and a head above along Y.

Where it fails: limbs that touch the body or each other at the voxel size (arms pressed to the torso, legs in a
long skirt) merge into one lump, which gets one chain; parts thinner than about two voxels (fingers, thin ears)
and parts short next to the body they leave (the goblin's ears beside its big head) get no bone; open sheets (a
lone cape, a plane) enclose no volume and are voxelised as a thickened surface, which rigs poorly (the job says so
in its warnings, as it does for a nearly flat mesh and for one with holes); loose parts
away from the largest solid (a floating weapon) get no bones and follow the nearest; a humanoid lying down, upside
down, on all fours, or with its hands on the ground is rigged as a generic shape, and one facing another way has
Left and Right swapped. Joints sit at even spacing along chains (humanoid: fixed proportions), not at the
shape's actual elbows and knees. Bone heat trusts the nearest visible bone, so on a stocky figure the torso goes
mostly to the arm, leg and neck bones that pass close to its surface rather than to Spine and Chest.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import networkx as nx
import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla
import trimesh
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from pocket3d.errors import WarningCode
from pocket3d.geometry.decimate import decimate_mesh
from pocket3d.geometry.gltf_writer import Skeleton, write_skinned_glb
from pocket3d.geometry.meshes import one_mesh, weld
from pocket3d.geometry.validate import load_scene
from pocket3d.formats import formats_for
from pocket3d.models.builtin import builtin_spec
from pocket3d.models.builtin.guards import require_finite
from pocket3d.models.spec import Feature, InputRejected, ModelAdapter, ProgressFn, RunInputs, warn

GRID = {"low": 64, "medium": 96, "high": 128}  # voxels along the longest side, by quality
COVER_SCALE = 2.0  # TEASAR: a path covers the voxels within this many times its distance to the surface
SOLVE_FACES = 200_000  # above this the weights are solved on a decimated copy of this size
UP = 1  # the mesh is Y-up
LEFT = np.array([1.0, 0.0, 0.0])  # a character's left (see the module docstring)
FLAT_SHARE = 0.02  # a mesh whose thinnest side is below this share of its longest is flat
OPEN_SHARE = 0.001  # a mesh with more than this share of its edges on a hole's rim is open


class RiggingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: int | None = Field(None, ge=32, le=192,
                                   description="voxels along the longest side; default from quality (64/96/128)")
    max_joints: int = Field(48, ge=3, le=128, description="most joints in the skeleton, end joints included")
    humanoid: Literal["auto", "yes", "no"] = Field(
        "auto", description="name the joints in a humanoid layout (Hips, Spine, ..., LeftUpperArm, ...): when the "
                            "shape reads as a humanoid (auto), always (yes: refused when it does not), or never "
                            "(no)")


class GeometricRiggingModel(ModelAdapter):
    """Built-in CPU auto-rigging (medial-axis skeleton, bone-heat weights); no weights to download."""

    Params = RiggingParams
    default_spec = builtin_spec(
        "builtin_rigging", Feature.AUTO_RIGGING, {"mesh"}, formats_for(Feature.AUTO_RIGGING),
        "Built-in CPU baseline: skeleton from the voxelised shape's medial axis, bone-heat skin weights")

    def run(self, inputs: RunInputs, params: RiggingParams, progress: ProgressFn) -> dict[str, Path]:
        if inputs.mesh is None:
            raise InputRejected("auto-rigging needs a mesh")
        fmt = inputs.mesh.suffix.lower().lstrip(".")
        mesh = load_mesh(inputs.mesh, fmt)  # a MeshError says what is wrong with the file, with its error code
        if mesh.area <= 0:
            raise InputRejected("the mesh has no faces with any area: there is no shape to rig")
        warned = shape_warnings(mesh)
        for code, message in warned:
            warn(progress, code, message)
        progress(0.1, "voxelising")
        voxels = solid_voxels(mesh, params.resolution or GRID.get(inputs.quality, 96))
        if voxels.from_surface and not warned:  # else what made it so is already said
            warn(progress, WarningCode.OPEN_MESH, "the mesh encloses no volume (an open sheet): it was rigged as its "
                 "surface thickened by a voxel, which rigs poorly; close its holes for a better skeleton")
        progress(0.25, "finding the skeleton")
        skeleton = choose_skeleton(skeleton_tree(voxels), voxels, [UP], params)
        progress(0.45, "computing skin weights")
        weights = bone_heat_weights(mesh, skeleton, progress)
        require_finite("the joints or skin weights", skeleton.heads, weights)
        progress(0.9, "writing the rigged mesh")
        out = inputs.work_dir / "rigged.glb"
        write_skinned_glb(mesh, skeleton, weights, out)
        return {"mesh": out}


def choose_skeleton(tree: SkeletonTree, voxels: Voxels, up_axes: list[int], params: RiggingParams) -> Skeleton:
    """The humanoid layout along the first up axis that reads as one (unless told no), else the generic one."""
    if params.humanoid != "no":
        for up in up_axes:
            if skeleton := humanoid_skeleton(tree, voxels, up, params.max_joints):
                return skeleton
        if params.humanoid == "yes":
            raise InputRejected("the shape does not read as a humanoid (standing upright on two legs apart, two "
                                f"arms on either side; and it needs max_joints of {HUMANOID_JOINTS} or more); "
                                "use humanoid=auto or no")
    return generic_skeleton(tree, voxels, params.max_joints)


# -- input --------------------------------------------------------------------------------------------------------

def load_mesh(path: Path, fmt: str) -> trimesh.Trimesh:
    """One mesh in world coordinates: a single part as it is (texture and UVs kept), several merged with their
    looks as vertex colours (one texture atlas for all would cost seconds and gigabytes)."""
    return one_mesh(load_scene(path, fmt))


def shape_warnings(mesh: trimesh.Trimesh) -> list[tuple[str, str]]:
    """What about the shape will make the rig poor: nearly flat, or open (holes in its surface)."""
    found = []
    extents = np.ptp(mesh.vertices[np.unique(mesh.faces)], axis=0)
    if extents.min() < FLAT_SHARE * extents.max():
        found.append((WarningCode.FLAT_MESH, f"the mesh is nearly flat (its thinnest side is "
                      f"{100 * extents.min() / extents.max():.1f} % of its longest): there is hardly a volume to put "
                      "a skeleton in, so the rig will bend poorly"))
    edges = np.sort(weld(mesh.vertices, mesh.faces).faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    rims = int((counts == 1).sum())
    if rims > OPEN_SHARE * len(counts):
        found.append((WarningCode.OPEN_MESH, f"the mesh is open ({rims} edges border a hole): its inside is "
                      "guessed where the holes are, so the skeleton may miss or merge parts there"))
    return found


# -- volume -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Voxels:
    solid: np.ndarray  # (X, Y, Z) bool
    origin: np.ndarray  # centre of voxel (0, 0, 0)
    pitch: float
    from_surface: bool = False  # the mesh enclosed nothing: this is its surface, thickened

    def centres(self, ijk: np.ndarray) -> np.ndarray:
        return self.origin + np.asarray(ijk, dtype=float) * self.pitch

    @cached_property
    def size(self) -> float:
        """The extent of the solid along its longest side."""
        ijk = np.argwhere(self.solid)
        return float((np.ptp(ijk, axis=0).max() + 1) * self.pitch)


def solid_voxels(mesh: trimesh.Trimesh, resolution: int) -> Voxels:
    used = mesh.vertices[np.unique(mesh.faces)]  # a stray unused vertex must not stretch the grid
    lo, hi = used.min(axis=0), used.max(axis=0)
    pitch = float((hi - lo).max()) / resolution
    if pitch <= 0:
        raise InputRejected("the mesh is a single point")
    shape = np.ceil((hi - lo) / pitch).astype(int) + 3  # an empty layer all round
    origin = (lo + hi) / 2 - (shape - 1) / 2 * pitch
    inside = _inside(mesh, shape, origin, pitch)
    from_surface = bool(inside.sum() < 8)
    if from_surface:  # an open sheet encloses nothing: take its surface, thickened
        inside = ndimage.binary_dilation(_surface_voxels(mesh, shape, origin, pitch), iterations=1)
    inside = ndimage.binary_fill_holes(inside)
    labels, count = ndimage.label(inside, structure=np.ones((3, 3, 3)))
    if count == 0:
        raise InputRejected("the mesh encloses no volume that can carry a skeleton")
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return Voxels(labels == largest, origin, pitch, from_surface)


def _inside(mesh: trimesh.Trimesh, shape: np.ndarray, origin: np.ndarray, pitch: float) -> np.ndarray:
    """Voxel centres inside the surface. Along each axis one ray per grid row, its crossings counted before every
    centre: the winding number (entering +1, leaving -1 by the face's normal) where the row's crossings sum to
    zero, so overlapping closed parts stay solid; else, for rows with inconsistent normals, the parity of the
    count; rows with an odd count (through a hole) abstain. The majority of the axes that vote wins."""
    votes = np.zeros(shape, np.int8)
    voters = np.zeros(shape, np.int8)
    jitter = np.array([0.0137, -0.0071]) * pitch  # off the grid, so rays miss the edges of axis-aligned meshes
    for axis in range(3):
        b, c = (a for a in range(3) if a != axis)
        jb, jc = np.meshgrid(np.arange(shape[b]), np.arange(shape[c]), indexing="ij")
        origins = np.zeros((jb.size, 3))
        origins[:, b] = origin[b] + jb.ravel() * pitch + jitter[0]
        origins[:, c] = origin[c] + jc.ravel() * pitch + jitter[1]
        origins[:, axis] = origin[axis] - pitch
        directions = np.zeros_like(origins)
        directions[:, axis] = 1.0
        hits, ray, face = mesh.ray.intersects_location(origins, directions, multiple_hits=True)
        entering = -np.sign(mesh.face_normals[face, axis]).astype(np.int32)
        # a crossing counts for every centre after it: mark the first such centre, then a running sum
        first_after = np.ceil((hits[:, axis] - origin[axis]) / pitch).astype(int).clip(0, shape[axis])
        crossings = np.zeros((len(origins), shape[axis] + 1), np.int32)
        winding = np.zeros_like(crossings)
        np.add.at(crossings, (ray, first_after), 1)
        np.add.at(winding, (ray, first_after), entering)
        crossings, winding = np.cumsum(crossings, axis=1), np.cumsum(winding, axis=1)
        consistent = (winding[:, -1] == 0)[:, None]
        even = (crossings[:, -1] % 2 == 0)[:, None]
        inside = np.where(consistent, winding[:, :-1] != 0, crossings[:, :-1] % 2 == 1) & (consistent | even)
        votes_here = inside.reshape(shape[b], shape[c], shape[axis]).astype(np.int8)
        voting = np.broadcast_to(consistent | even, inside.shape).reshape(shape[b], shape[c], shape[axis])
        order = np.argsort([b, c, axis])  # from (b, c, axis) back to (x, y, z)
        votes += np.transpose(votes_here, order)
        voters += np.transpose(voting.astype(np.int8), order)
    return votes * 2 > voters


def _surface_voxels(mesh: trimesh.Trimesh, shape: np.ndarray, origin: np.ndarray, pitch: float) -> np.ndarray:
    count = int(min(2_000_000, max(10_000, 4 * mesh.area / pitch**2)))
    points = np.vstack([trimesh.sample.sample_surface(mesh, count, seed=0)[0], mesh.vertices])
    ijk = np.rint((points - origin) / pitch).astype(int).clip(0, shape - 1)
    grid = np.zeros(shape, bool)
    grid[tuple(ijk.T)] = True
    return grid


# -- curve skeleton -----------------------------------------------------------------------------------------------

@dataclass
class SkeletonTree:
    """The pruned curve skeleton as a tree of nodes (root, junctions, tips) joined by voxel paths."""

    position: dict[int, np.ndarray]  # node -> world position
    radius: dict[int, float]  # node -> distance to the outside
    graph: nx.Graph  # nodes joined by edges with "path": (k, 3) positions from the smaller node id to the larger
    root: int
    centre_of_mass: np.ndarray

    def copy(self) -> SkeletonTree:
        return SkeletonTree(dict(self.position), dict(self.radius), self.graph.copy(), self.root,
                            self.centre_of_mass)

    def set_path(self, a: int, b: int, path: np.ndarray) -> None:
        """Join a and b by ``path``, given from a to b."""
        self.graph.add_edge(a, b, path=path if a < b else path[::-1])

    def remove(self, node: int) -> None:
        """Take a node away; a neighbour left as a mere bend (two edges, not the root) is joined through."""
        neighbours = list(self.graph.neighbors(node))
        self.graph.remove_node(node)
        del self.position[node], self.radius[node]
        for other in neighbours:
            if other != self.root and self.graph.degree(other) == 2:
                a, b = self.graph.neighbors(other)
                self.set_path(a, b, self.path([a, other, b]))
                self.graph.remove_node(other)
                del self.position[other], self.radius[other]

    def path(self, nodes: list[int]) -> np.ndarray:
        """The voxel positions along a walk through adjacent nodes."""
        points = [self.position[nodes[0]][None]]
        for a, b in zip(nodes[:-1], nodes[1:], strict=True):
            segment = self.graph.edges[a, b]["path"]
            points.append((segment if a < b else segment[::-1])[1:])
        return np.vstack(points)


def skeleton_tree(voxels: Voxels) -> SkeletonTree:
    """The solid, opened, thinned to curves (scikit-image ``skeletonize``, Lee's method) and read as a graph of
    26-neighbours; its branches chosen from the root, the skeleton voxel nearest the centre of mass."""
    solid = _smoothed(voxels.solid)
    thin = skeletonize(solid) > 0
    if not thin.any():  # too small to thin: its middle voxel stands for it
        thin[tuple(np.argwhere(solid)[len(np.argwhere(solid)) // 2])] = True
    ijk = np.argwhere(thin)
    positions = voxels.centres(ijk)
    radius = ndimage.distance_transform_edt(np.pad(solid, 1))[1:-1, 1:-1, 1:-1][thin] * voxels.pitch
    centre_of_mass = voxels.centres(np.argwhere(solid).mean(axis=0))
    steps = _voxel_graph(thin, ijk, voxels.pitch)
    # the piece of skeleton that carries most of the volume (thinning can leave specks)
    _, piece = csgraph.connected_components(steps, directed=False)
    main = np.flatnonzero(piece == np.argmax(np.bincount(piece, weights=radius**2)))
    root = int(main[np.argmin(np.linalg.norm(positions[main] - centre_of_mass, axis=1))])
    tau = max(2.5 * voxels.pitch, 0.06 * voxels.size)  # how far a limb sticks out at least
    parent, on_tree = _branches(steps, positions, radius, root, voxels.pitch, tau)
    tree = _node_tree(parent, on_tree, root, positions, radius, centre_of_mass)
    _simplify(tree, voxels.pitch, tau)
    return tree


def _branches(steps: sp.csr_matrix, positions: np.ndarray, radius: np.ndarray, root: int, pitch: float,
              tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Thinning keeps every bump as a spur and a flat part (a plate-like body, an ear) as a web of curves, so the
    branches are chosen TEASAR-style (Sato et al. 2000): the farthest skeleton voxel not yet covered is joined to
    the tree by its shortest path, which then covers every skeleton voxel within ``COVER_SCALE`` times its
    distance to the surface (plus two voxels). A branch whose tip sticks out of the ball where it joins by less
    than ``tau`` is dropped, but still covers its voxels. Returns parent pointers and the voxels on the tree."""
    reach, towards_root = csgraph.dijkstra(steps, directed=False, indices=root, return_predecessors=True)
    covered = ~np.isfinite(reach)
    on_tree = np.zeros(len(positions), bool)
    on_tree[root] = True
    parent = -np.ones(len(positions), np.int64)
    balls = cKDTree(positions)

    def cover(path: list[int]) -> None:
        inside = balls.query_ball_point(positions[path], COVER_SCALE * radius[path] + 2 * pitch)
        covered[np.concatenate([np.asarray(i, np.int64) for i in inside])] = True

    cover([root])
    while not covered.all():
        tip = int(np.argmax(np.where(covered, -1.0, reach)))
        path = [tip]
        while not on_tree[path[-1]]:
            path.append(int(towards_root[path[-1]]))
        cover(path)
        joins = path[-1]
        if np.linalg.norm(positions[tip] - positions[joins]) + radius[tip] - radius[joins] < tau:
            continue  # a bump, not a limb
        parent[path[:-1]] = path[1:]
        on_tree[path] = True
    return parent, on_tree


def _smoothed(solid: np.ndarray) -> np.ndarray:
    """The solid opened by one voxel: thin sheets (a belt, a loincloth, a cape) would thin into a web of
    branches. Skipped where it would take away much of the shape (a shape of thin parts)."""
    opened = ndimage.binary_opening(solid, structure=ndimage.generate_binary_structure(3, 1))
    labels, count = ndimage.label(opened, structure=np.ones((3, 3, 3)))
    if count == 0:
        return solid
    largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return largest if largest.sum() >= 0.7 * solid.sum() else solid


def _voxel_graph(occupied: np.ndarray, ijk: np.ndarray, pitch: float) -> sp.csr_matrix:
    """The 26-neighbour graph of the occupied voxels ``ijk``, edges weighted by length."""
    index = -np.ones(occupied.shape, np.int64)
    index[tuple(ijk.T)] = np.arange(len(ijk))
    padded = np.pad(index, 1, constant_values=-1)
    rows, cols, lengths = [], [], []
    for offset in np.argwhere(np.ones((3, 3, 3)))[:13] - 1:  # half of the 26 neighbours: each pair once
        other = padded[tuple((ijk + 1 + offset).T)]
        ok = other >= 0
        rows.append(np.flatnonzero(ok))
        cols.append(other[ok])
        lengths.append(np.full(ok.sum(), np.linalg.norm(offset) * pitch))
    n = len(ijk)
    return sp.csr_matrix((np.concatenate(lengths), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def _node_tree(parent: np.ndarray, alive: np.ndarray, root: int, positions: np.ndarray, radius: np.ndarray,
               centre_of_mass: np.ndarray) -> SkeletonTree:
    """The voxel tree given by ``parent`` pointers, as nodes (root, junctions, tips) joined by voxel paths."""
    children = np.bincount(parent[alive & (parent >= 0)], minlength=len(parent))
    is_node = alive & (children != 1)
    is_node[root] = True
    graph = nx.Graph()
    graph.add_node(root)
    for start in np.flatnonzero(is_node):
        if start == root:
            continue
        chain, node = [start], parent[start]
        while not is_node[node]:
            chain.append(node)
            node = parent[node]
        chain.append(node)
        path = positions[chain]  # from start up to its parent node
        a, b = int(start), int(node)
        graph.add_edge(a, b, path=path if a < b else path[::-1])
    nodes = list(graph.nodes)
    return SkeletonTree({n: positions[n] for n in nodes}, {n: float(radius[n]) for n in nodes}, graph, root,
                        centre_of_mass)


def _simplify(tree: SkeletonTree, pitch: float, tau: float) -> None:
    """Merge close junctions and drop the tips that hardly stick out of theirs, until neither is left (each can
    make room for the other)."""
    while _merge_close_junctions(tree, pitch) or _drop_stubs(tree, tau):
        pass


def _merge_close_junctions(tree: SkeletonTree, pitch: float) -> bool:
    """Contract an edge between junctions shorter than two voxels or half the smaller one's distance to the
    surface, keeping the node nearer the root. Returns whether anything changed."""
    changed = False
    while True:
        short = [(a, b) for a, b, path in tree.graph.edges(data="path")
                 if tree.graph.degree(a) > 1 and tree.graph.degree(b) > 1
                 and _length(path) < max(2 * pitch, 0.5 * min(tree.radius[a], tree.radius[b]))]
        if not short:
            return changed
        a, b = min(short, key=lambda edge: _length(tree.graph.edges[edge]["path"]))
        depth = nx.shortest_path_length(tree.graph, tree.root)
        keep, gone = (a, b) if depth[a] <= depth[b] else (b, a)
        for other in list(tree.graph.neighbors(gone)):
            if other != keep:
                tree.set_path(keep, other, tree.path([keep, gone, other]))
        tree.graph.remove_edge(keep, gone)
        tree.remove(gone)
        changed = True


def _drop_stubs(tree: SkeletonTree, tau: float) -> bool:
    """Drop tips whose ball sticks out of their junction's by less than ``tau``, the least first, never two at one
    junction in a round. Returns whether anything changed."""
    stubs: dict[int, tuple[float, int]] = {}
    for tip in [n for n in tree.graph.nodes if tree.graph.degree(n) == 1 and n != tree.root]:
        (junction,) = tree.graph.neighbors(tip)
        if junction != tree.root and tree.graph.degree(junction) < 3:
            continue  # the tree is a single chain here: nothing to compete with
        out = np.linalg.norm(tree.position[tip] - tree.position[junction]) + tree.radius[tip] - tree.radius[junction]
        if out < tau and (junction not in stubs or out < stubs[junction][0]):
            stubs[junction] = (out, tip)
    for _, tip in stubs.values():
        if tip in tree.graph:
            tree.remove(tip)
    return bool(stubs)


def _length(path: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())


def _point_along(path: np.ndarray, fraction: float) -> np.ndarray:
    """The voxel of ``path`` nearest the given fraction of its length (a voxel, so inside the shape)."""
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    return path[int(np.argmin(np.abs(arc - fraction * arc[-1])))]


# -- joints: any shape --------------------------------------------------------------------------------------------

def generic_skeleton(tree: SkeletonTree, voxels: Voxels, max_joints: int) -> Skeleton:
    """Joints at the root, the junctions, the tips and evenly along chains, within ``max_joints``."""
    tree = tree.copy()
    spacing = 0.15 * voxels.size
    while True:
        chains = [list(edge) for edge in nx.bfs_edges(tree.graph, tree.root)]  # parents first
        counts = [max(1, int(round(_length(tree.path(c)) / spacing))) for c in chains]
        if 1 + sum(counts) <= max_joints:
            break
        if sum(counts) > len(chains):
            spacing *= 1.25
            continue
        _drop_shortest_tip_chain(tree, chains)
    names, parents, heads = ["root"], [-1], [tree.position[tree.root]]
    joint_of = {tree.root: 0}
    for number, (chain, count) in enumerate(zip(chains, counts, strict=True), start=1):
        path = tree.path(chain)
        parent = joint_of[chain[0]]
        for k in range(1, count + 1):
            names.append(f"branch_{number}_{k}")
            parents.append(parent)
            heads.append(_point_along(path, k / count) if k < count else tree.position[chain[-1]])
            parent = len(names) - 1
        joint_of[chain[-1]] = parent
    return Skeleton(names, parents, np.array(heads, dtype=float))


def _drop_shortest_tip_chain(tree: SkeletonTree, chains: list[list[int]]) -> None:
    tips = [c for c in chains if tree.graph.degree(c[-1]) == 1]
    tree.remove(min(tips, key=lambda c: _length(tree.path(c)))[-1])


# -- joints: a humanoid -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Humanoid:
    """The walks through the skeleton tree that make a humanoid, each a list of nodes."""

    hips: int
    spine: list[int]  # hips .. chest (where the arms leave the trunk)
    neck: list[int]  # chest .. top of the trunk
    arms: dict[str, list[int]]  # "Left"/"Right": attachment on the trunk .. hand tip
    legs: dict[str, list[int]]  # "Left"/"Right": hips .. foot tip


HUMANOID_JOINTS = 24  # the named joints below, ends included


def humanoid_skeleton(tree: SkeletonTree, voxels: Voxels, up: int, max_joints: int) -> Skeleton | None:
    """The named humanoid layout, or None when the shape does not read as a humanoid."""
    if max_joints < HUMANOID_JOINTS:
        return None
    body = _read_humanoid(tree, voxels, up)
    if body is None:
        return None
    joints = _Joints()
    hips = joints.add("Hips", -1, tree.position[body.hips])
    spine_path, neck_path = tree.path(body.spine), tree.path(body.neck)
    spine = joints.add("Spine", hips, _point_along(spine_path, 1 / 3))
    chest = joints.add("Chest", spine, _point_along(spine_path, 2 / 3))
    neck = joints.add("Neck", chest, _point_along(neck_path, 0.15))
    head = joints.add("Head", neck, _point_along(neck_path, 0.5))
    joints.add("HeadTop_End", head, neck_path[-1])
    for side in ("Left", "Right"):
        arm = tree.path(body.arms[side])
        out = _leaves_ball(arm, tree.radius[body.arms[side][0]], cap=0.35)
        parent = chest
        for name, at in (("Shoulder", 0.4 * out), ("UpperArm", out), ("LowerArm", out + 0.45 * (1 - out)),
                         ("Hand", out + 0.82 * (1 - out)), ("Hand_End", 1.0)):
            parent = joints.add(side + name, parent, _point_along(arm, at))
    for side in ("Left", "Right"):
        leg = tree.path(body.legs[side])
        out = _leaves_ball(leg, 0.5 * tree.radius[body.hips], cap=0.3)
        parent = hips
        for name, at in (("UpperLeg", out), ("LowerLeg", out + 0.5 * (1 - out)), ("Foot", out + 0.88 * (1 - out)),
                         ("Foot_End", 1.0)):
            parent = joints.add(side + name, parent, _point_along(leg, at))
    _add_side_branches(tree, body, joints, voxels, max_joints)
    return joints.skeleton()


class _Joints:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.parents: list[int] = []
        self.heads: list[np.ndarray] = []

    def add(self, name: str, parent: int, head: np.ndarray) -> int:
        self.names.append(name)
        self.parents.append(parent)
        self.heads.append(np.asarray(head, dtype=float))
        return len(self.names) - 1

    def skeleton(self) -> Skeleton:
        return Skeleton(self.names, self.parents, np.array(self.heads))


def _leaves_ball(path: np.ndarray, radius: float, cap: float) -> float:
    """The fraction of ``path`` where it leaves the ball of ``radius`` around its start (at most ``cap``)."""
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    outside = np.flatnonzero(np.linalg.norm(path - path[0], axis=1) >= radius)
    at = arc[outside[0]] / arc[-1] if len(outside) and arc[-1] > 0 else cap
    return float(min(at, cap))


def _read_humanoid(tree: SkeletonTree, voxels: Voxels, up: int) -> _Humanoid | None:
    """Upright, two legs reaching the ground on either side, a trunk rising from their junction, two arms
    leaving the trunk on either side with their hands off the ground; None when any of it is missing."""
    graph = tree.graph
    ijk = np.argwhere(voxels.solid)
    low = voxels.origin[up] + ijk[:, up].min() * voxels.pitch
    height = float((np.ptp(ijk[:, up]) + 1) * voxels.pitch)
    across = [a for a in range(3) if a != up]
    if height < 0.5 * max(np.ptp(ijk[:, a]) + 1 for a in across) * voxels.pitch:
        return None  # lying down, or far wider than tall
    rise = {n: (p[up] - low) / height for n, p in tree.position.items()}
    tips = [n for n in graph.nodes if graph.degree(n) == 1 and n != tree.root]
    if len(tips) < 5:
        return None
    feet = sorted(tips, key=rise.get)[:3]
    if max(rise[f] for f in feet[:2]) > 0.2 or (len(feet) > 2 and rise[feet[2]] < 0.1):
        return None  # not two feet on the ground, or more than two (a four-legged animal)
    feet = feet[:2]
    between = nx.shortest_path(graph, feet[0], feet[1])
    depth = nx.shortest_path_length(graph, tree.root)
    hips = min(between, key=depth.get)  # where the legs meet, seen from the middle of the body
    level = tree.position[hips] - tree.centre_of_mass
    level[up] = 0
    if np.linalg.norm(level) > 0.2 * height:
        return None  # the legs meet far from under the body's weight
    legs = {_side(tree.position[f] - tree.position[hips]): nx.shortest_path(graph, hips, f) for f in feet}
    if set(legs) != {"Left", "Right"}:
        return None
    trunk = _trunk(tree, hips, {legs["Left"][1], legs["Right"][1]}, up)
    if len(trunk) < 2 or rise[trunk[-1]] - rise[hips] < 0.3:
        return None
    found = _arms(tree, trunk, rise)
    if found is None:
        return None
    chest_index, arms = found
    if rise[trunk[chest_index]] - rise[hips] < 0.1:
        return None
    return _Humanoid(hips, trunk[:chest_index + 1], trunk[chest_index:], arms, legs)


def _side(offset: np.ndarray) -> str:
    return "Left" if float(offset @ LEFT) > 0 else "Right"


def _trunk(tree: SkeletonTree, hips: int, legs: set[int], up: int) -> list[int]:
    """From the hips, up the most upright chain at every junction while it rises steeply."""
    walk, previous = [hips], None
    while True:
        node = walk[-1]
        best, best_slope = None, 0.5
        for other in tree.graph.neighbors(node):
            if other == previous or (node == hips and other in legs):
                continue
            direction = tree.position[other] - tree.position[node]
            slope = direction[up] / max(np.linalg.norm(direction), 1e-12)
            if slope > best_slope:
                best, best_slope = other, slope
        if best is None:
            return walk
        previous = node
        walk.append(best)


def _arms(tree: SkeletonTree, trunk: list[int], rise: dict[int, float]) -> tuple[int, dict[str, list[int]]] | None:
    """Two long side branches leaving the trunk at about the same height on either side, their hands well off
    the ground; the lowest such pair (ears and horns leave higher). Returns the chest's place on the trunk."""
    on_trunk = set(trunk)
    candidates: dict[str, list[tuple[int, list[int]]]] = {"Left": [], "Right": []}
    size = max(_length(tree.path(trunk)), 1e-12)
    for index, node in enumerate(trunk[1:-1], start=1):
        for first in tree.graph.neighbors(node):
            if first in on_trunk:
                continue
            hand = _farthest_tip(tree, node, first)
            walk = nx.shortest_path(tree.graph, node, hand)
            offset = tree.position[hand] - tree.position[node]
            if _length(tree.path(walk)) < 0.25 * size or abs(offset @ LEFT) < 0.1 * size or rise[hand] < 0.2:
                continue
            candidates[_side(offset)].append((index, walk))
    pairs = [(left, right) for left in candidates["Left"] for right in candidates["Right"]]
    if not pairs:
        return None

    def level_then_low(pair: tuple) -> tuple:
        (a, _), (b, _) = pair
        apart = abs(rise[trunk[a]] - rise[trunk[b]])
        return (apart > 0.05, apart if apart > 0.05 else 0.0, max(a, b))

    (a, left), (b, right) = min(pairs, key=level_then_low)
    if abs(rise[trunk[a]] - rise[trunk[b]]) > 0.15:
        return None
    return max(a, b), {"Left": left, "Right": right}


def _farthest_tip(tree: SkeletonTree, base: int, first: int) -> int:
    """The tip farthest along the skeleton in the branch that leaves ``base`` through ``first``."""
    lengths = nx.single_source_dijkstra_path_length(
        tree.graph.subgraph(set(tree.graph.nodes) - {base}), first,
        weight=lambda a, b, data: _length(data["path"]))
    return max(lengths, key=lengths.get)


def _add_side_branches(tree: SkeletonTree, body: _Humanoid, joints: _Joints, voxels: Voxels,
                       max_joints: int) -> None:
    """Branches the layout has no name for (ears, a tail, a weapon), longest first while joints are left,
    each hanging off the nearest named joint that is not an end."""
    used = set(body.spine) | set(body.neck) | {n for w in (*body.arms.values(), *body.legs.values()) for n in w}
    branches = []
    for tip in (n for n in tree.graph.nodes if tree.graph.degree(n) == 1 and n not in used):
        walk = nx.shortest_path(tree.graph, tip, body.hips)
        base = next(i for i, n in enumerate(walk) if n in used)
        branches.append(walk[:base + 1][::-1])  # from where it leaves the named skeleton to its tip
    branches.sort(key=lambda w: -_length(tree.path(w)))
    spacing = 0.15 * voxels.size
    heads = np.array(joints.heads)
    hosts = [i for i, name in enumerate(joints.names) if not name.endswith("_End")]
    for number, walk in enumerate(branches, start=1):
        path = tree.path(walk)
        count = max(1, int(round(_length(path) / spacing)))
        if _length(path) < 2 * voxels.pitch or len(joints.names) + count > max_joints:
            continue
        parent = hosts[int(np.argmin(np.linalg.norm(heads[hosts] - path[0], axis=1)))]
        for k in range(1, count + 1):
            parent = joints.add(f"branch_{number}_{k}", parent, _point_along(path, k / count))


# -- skin weights -------------------------------------------------------------------------------------------------

def bone_heat_weights(mesh: trimesh.Trimesh, skeleton: Skeleton,
                      progress: ProgressFn = lambda fraction, message: None) -> np.ndarray:
    """(vertices, joints) weights for the mesh's own vertices, each row summing to 1."""
    solved = _solve_mesh(mesh)
    joined = weld(solved.vertices, solved.faces)
    welded, twin = joined.mesh(), joined.inverse
    starts, ends, owner = _bones(skeleton)
    if len(owner) == 0:  # a lone joint: the mesh is rigid
        return np.ones((len(mesh.vertices), 1))
    distances = _segment_distances(welded.vertices, starts, ends)
    progress(0.55, "finding what each bone can see")
    nearest = _nearest_visible(welded, distances, starts, ends)
    heat = np.zeros(len(welded.vertices))
    chosen = nearest >= 0
    heat[chosen] = 1.0 / np.maximum(distances[np.flatnonzero(chosen), nearest[chosen]], 1e-9) ** 2
    stiffness, area = _cotangent_laplacian(welded)
    _heat_every_piece(stiffness, heat, nearest, distances)
    diagonal = area * heat
    system = (stiffness + sp.diags(diagonal)).tocsc()
    progress(0.65, "solving the heat equation")
    bone_columns = np.unique(owner)  # the joints that own a bone; end joints own none
    targets = np.zeros((len(welded.vertices), len(bone_columns)))
    rows = np.flatnonzero(nearest >= 0)
    targets[rows, np.searchsorted(bone_columns, owner[nearest[rows]])] = diagonal[rows]
    # symmetric and diagonally dominant: no pivoting needed, and pivoting would undo the fill-reducing order
    lu = spla.splu(system, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    solution = lu.solve(targets)
    weights = np.zeros((len(welded.vertices), len(skeleton.names)))
    weights[:, bone_columns] = np.clip(solution, 0.0, None)
    weights = _ensure_positive(weights, distances, owner)
    weights = weights[twin]
    if solved is not mesh:  # solved on a decimated copy: each vertex takes the nearest solved vertex's weights
        _, closest = cKDTree(solved.vertices).query(mesh.vertices)
        weights = weights[closest]
    return weights / weights.sum(axis=1, keepdims=True)


def _solve_mesh(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    if len(mesh.faces) <= SOLVE_FACES:
        return mesh
    return decimate_mesh(trimesh.Trimesh(mesh.vertices, mesh.faces, process=False), SOLVE_FACES)


def _bones(skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every joint-to-child segment, and the joint that owns it (the parent: rotating it swings the segment)."""
    children = np.array([j for j, p in enumerate(skeleton.parents) if p >= 0], dtype=np.int64)
    owner = np.array(skeleton.parents, dtype=np.int64)[children]
    return skeleton.heads[owner], skeleton.heads[children], owner


def _closest_on_segments(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The point of each segment (start, end) nearest the point paired with it; arrays broadcast."""
    axis = ends - starts
    t = ((points - starts) * axis).sum(axis=-1) / np.maximum((axis**2).sum(axis=-1), 1e-20)
    return starts + np.clip(t, 0.0, 1.0)[..., None] * axis


def _segment_distances(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(points, segments) distances, a segment at a time so that memory stays points x segments."""
    out = np.empty((len(points), len(starts)))
    for b in range(len(starts)):
        out[:, b] = np.linalg.norm(points - _closest_on_segments(points, starts[b], ends[b]), axis=1)
    return out


def _nearest_visible(mesh: trimesh.Trimesh, distances: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                     tries: int = 3) -> np.ndarray:
    """Per vertex, the nearest bone whose closest point sees the vertex (no surface in between), among the
    ``tries`` nearest; -1 where none does."""
    order = np.argsort(distances, axis=1)[:, :tries]
    chosen = -np.ones(len(mesh.vertices), np.int64)
    size = float(np.ptp(mesh.vertices, axis=0).max())
    for k in range(order.shape[1]):
        todo = np.flatnonzero(chosen < 0)
        if len(todo) == 0:
            break
        bone = order[todo, k]
        vertex = mesh.vertices[todo]
        source = _closest_on_segments(vertex, starts[bone], ends[bone])
        reach = np.linalg.norm(vertex - source, axis=1)
        direction = (vertex - source) / np.maximum(reach, 1e-12)[:, None]
        first = _first_hit_distance(mesh, source, direction)
        seen = first >= reach - np.maximum(0.02 * reach, 1e-4 * size)
        chosen[todo[seen]] = bone[seen]
    return chosen


def _first_hit_distance(mesh: trimesh.Trimesh, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    hits, ray, _ = mesh.ray.intersects_location(origins, directions, multiple_hits=False)
    first = np.full(len(origins), np.inf)
    np.minimum.at(first, ray, np.linalg.norm(hits - origins[ray], axis=1))
    return first


def _cotangent_laplacian(mesh: trimesh.Trimesh) -> tuple[sp.csr_matrix, np.ndarray]:
    """The cotangent stiffness matrix (positive semi-definite, no stored zeros) and the lumped vertex areas.
    Zero-area faces are skipped and cotangents clamped to [0, 1000]: neither degenerate nor obtuse triangles can
    make an entry infinite or of the wrong sign."""
    faces = mesh.faces
    corners = mesh.vertices[faces]  # (F, 3, 3)
    doubled_area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    scale = max(float(np.ptp(mesh.vertices, axis=0).max()), 1e-12)
    keep = doubled_area > 1e-12 * scale**2
    faces, corners, doubled_area = faces[keep], corners[keep], doubled_area[keep]
    n = len(mesh.vertices)
    rows, cols, values = [], [], []
    for k in range(3):  # the angle at corner k faces the edge (k+1, k+2)
        i, j = (k + 1) % 3, (k + 2) % 3
        u, v = corners[:, i] - corners[:, k], corners[:, j] - corners[:, k]
        cot = np.clip((u * v).sum(axis=1) / doubled_area, 0.0, 1000.0) / 2
        rows += [faces[:, i], faces[:, j]]
        cols += [faces[:, j], faces[:, i]]
        values += [-cot, -cot]
    off = sp.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    off.eliminate_zeros()  # a clamped edge couples nothing: it must not join pieces in _heat_every_piece
    stiffness = off - sp.diags(np.asarray(off.sum(axis=1)).ravel())
    area = np.bincount(faces.ravel(), weights=np.repeat(doubled_area / 6, 3), minlength=n)
    area = np.maximum(area, 1e-6 * max(float(area.mean()), 1e-30))  # vertices on skipped faces only
    return stiffness.tocsr(), area


def _heat_every_piece(stiffness: sp.csr_matrix, heat: np.ndarray, nearest: np.ndarray,
                      distances: np.ndarray) -> None:
    """A connected piece where no vertex sees a bone (a loose part, an unused vertex) would have no solution:
    heat all of it from its nearest bones, seen or not."""
    _, piece = csgraph.connected_components(stiffness, directed=False)
    heated = np.bincount(piece, weights=(heat > 0).astype(float))
    cold = np.flatnonzero(heated[piece] == 0)
    nearest[cold] = np.argmin(distances[cold], axis=1)
    heat[cold] = 1.0 / np.maximum(distances[cold, nearest[cold]], 1e-9) ** 2


def _ensure_positive(weights: np.ndarray, distances: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Round-off can leave a vertex with no weight (far from every heated vertex): give it its nearest bone."""
    empty = np.flatnonzero(weights.sum(axis=1) <= 1e-12)
    weights[empty, owner[np.argmin(distances[empty], axis=1)]] = 1.0
    return weights
