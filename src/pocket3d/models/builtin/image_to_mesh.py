"""Built-in image → mesh: silhouette inflation. A classical baseline, not a learned model.

1. Foreground: the alpha channel when the image has one, else GrabCut (OpenCV) seeded with the border colour.
2. The silhouette, on a grid, is inflated by a Poisson height field (Δh = -1 inside, h = 0 on the rim) whose square
   root gives round cross-sections; front (+h) and back (-h) share the rim, so the mesh is closed and watertight.
3. The image is projected onto the front as its texture (the back shows it mirrored).

It makes a plausible, printable blob in the outline of the object: right for silhouettes, wrong for depth.
Only the largest region of the picture is kept, and holes in it are filled (a ring comes out as a disc).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import trimesh
from PIL import Image, ImageOps
from scipy import ndimage
from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models.builtin import MESH_OUTPUTS, builtin_spec
from pocket3d.models.spec import Feature, InputRejected, ModelAdapter, ProgressFn, RunInputs

GRID = {"low": 96, "medium": 160, "high": 256}  # mesh grid, longest side, by quality


class SilhouetteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thickness: float = Field(0.35, gt=0, le=2.0, description="depth of the inflated shape relative to its width")
    grid: int | None = Field(None, ge=32, le=512, description="mesh grid, longest side; default from quality")


class SilhouetteInflationModel(ModelAdapter):
    """Built-in CPU image → mesh (silhouette inflation); no weights."""

    Params = SilhouetteParams
    default_spec = builtin_spec(
        "builtin_silhouette", Feature.MESH_GENERATION, {"image"}, MESH_OUTPUTS,
        "Built-in CPU baseline: the image's silhouette inflated into a closed mesh, the image as texture",
        cutout=True)

    def run(self, inputs: RunInputs, params: SilhouetteParams, progress: ProgressFn) -> dict[str, Path]:
        if not inputs.images:
            raise InputRejected("the silhouette model needs an image")
        progress(0.02, "reading the image")
        rgba = read_image(inputs.images[0])
        progress(0.1, "finding the foreground" if rgba[:, :, 3].min() < 250 else
                 "finding the foreground (GrabCut: the image has no transparency)")
        mask = foreground_mask(rgba)
        grid = params.grid or GRID.get(inputs.quality, 160)
        progress(0.3, f"inflating the silhouette on a {grid}-cell grid")
        mesh = inflate(mask, rgba, grid=grid, thickness=params.thickness, texture_size=inputs.texture_resolution,
                       progress=progress)
        progress(0.9, "writing the mesh")
        out = inputs.work_dir / "mesh.glb"
        mesh.export(out)
        return {"mesh": out}


# -- foreground -------------------------------------------------------------------------------------------------

def read_image(path: Path, what: str = "the image") -> np.ndarray:
    """The image as RGBA, turned as a photo viewer shows it (its EXIF orientation applied)."""
    try:
        with Image.open(path) as im:
            return np.array(ImageOps.exif_transpose(im).convert("RGBA"))
    except (OSError, Image.DecompressionBombError) as e:
        raise InputRejected(f"{what} cannot be read: {e}") from None


def cut_out(rgba: np.ndarray) -> np.ndarray:
    """The image with its alpha set to the object's mask (see foreground_mask), for code that reads the object
    from alpha."""
    out = rgba.copy()
    out[:, :, 3] = np.where(foreground_mask(rgba), 255, 0)
    return out


def foreground_mask(rgba: np.ndarray, work_size: int = 320, progress: ProgressFn | None = None) -> np.ndarray:
    """A boolean mask of the object at the image's resolution: the largest region, holes filled. ``progress``
    hears GrabCut's steps (fractions of this call)."""
    alpha = rgba[:, :, 3]
    if alpha.min() < 250:  # the image says what is transparent: trust it
        mask = alpha > 127
    else:
        mask = _grabcut(rgba[:, :, :3], work_size, progress)
    if progress is not None:
        progress(0.8, "keeping the largest object, its holes filled")
    mask = _largest_component(mask)
    if mask.sum() < 16:
        raise InputRejected("no object found in the image (the foreground is empty)")
    return mask


def _grabcut(rgb: np.ndarray, work_size: int, progress: ProgressFn | None = None) -> np.ndarray:
    h, w = rgb.shape[:2]
    if progress is not None:
        progress(0.1, "seeding GrabCut from the border colour")
    scale = min(1.0, work_size / max(h, w))
    small = cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    bgr = np.ascontiguousarray(small[:, :, ::-1])
    sh, sw = bgr.shape[:2]
    # Seed: pixels like the border colour are probably background; a border band is background for sure.
    border = np.concatenate([bgr[0], bgr[-1], bgr[:, 0], bgr[:, -1]]).astype(float)
    distance = np.linalg.norm(bgr.astype(float) - np.median(border, axis=0), axis=2)
    seed = np.where(distance > 30, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    band = max(2, min(sh, sw) // 40)
    seed[:band], seed[-band:], seed[:, :band], seed[:, -band:] = (cv2.GC_BGD,) * 4
    if not (seed == cv2.GC_PR_FGD).any():  # all of it looks like the border: nothing to cut out
        return np.zeros((h, w), bool)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    if progress is not None:
        progress(0.25, f"separating the object from the background with GrabCut ({sw}×{sh}, 4 rounds)")
    cv2.grabCut(bgr, seed, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)
    small_mask = np.isin(seed, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    return cv2.resize(small_mask, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros_like(mask)
    keep = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # Fill holes: what the outside cannot reach from the border is inside.
    filled = np.pad(keep, 1).astype(np.uint8)  # padded, so the outside is one connected region
    outside = np.zeros((filled.shape[0] + 2, filled.shape[1] + 2), np.uint8)
    cv2.floodFill(filled, outside, (0, 0), 2)
    return filled[1:-1, 1:-1] != 2


# -- inflation --------------------------------------------------------------------------------------------------

def inflate(mask: np.ndarray, rgba: np.ndarray, grid: int, thickness: float,
            texture_size: int = 1024, progress: ProgressFn | None = None) -> trimesh.Trimesh:
    report = progress or (lambda fraction, message: None)
    h, w = mask.shape
    scale = grid / 2 / max(h, w)  # cells are made at half the grid, then each split in four (see below)
    gh, gw = max(3, round(h * scale)), max(3, round(w * scale))
    # A cell a quarter covered counts: thin parts (a sword's blade, a bar) survive the down-sampling.
    coarse = cv2.resize(mask.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA) > 0.25
    coarse = _largest_component(coarse)
    if coarse.sum() < 2:
        raise InputRejected("the object is too small to make a mesh from")
    coarse = _remove_pinches(coarse)
    # Split every cell in four. Then every grid edge has an end with an odd coordinate, and such a vertex is
    # inside the shape whenever the edge is: no edge crosses the inside between two rim vertices, so front and
    # back can share the whole rim and the result is a closed 2-manifold.
    cells = np.kron(coarse, np.ones((2, 2), bool))
    gh, gw = cells.shape
    # Grid vertices sit at cell corners: (gh + 1) x (gw + 1). A vertex is used if a cell around it is.
    used = np.zeros((gh + 1, gw + 1), bool)
    inner = np.ones((gh + 1, gw + 1), bool)
    for dy in (0, 1):
        for dx in (0, 1):
            around = np.zeros((gh + 1, gw + 1), bool)
            around[dy:dy + gh, dx:dx + gw] = cells
            used |= around
            inner &= around
    report(0.45, f"solving the height field ({int(inner.sum())} unknowns)")
    height = _poisson_height(inner)
    report(0.65, "closing front and back along the rim")
    vy, vx = np.nonzero(used)
    index = -np.ones(used.shape, np.int64)
    index[vy, vx] = np.arange(len(vy))
    rim = ~inner[vy, vx]
    # Back vertices: new ones only where the surface is off the rim; the rim is shared, so the mesh is closed.
    back_index = np.where(rim, np.arange(len(vy)), len(vy) + np.cumsum(~rim) - 1)
    size = max(gh, gw)
    depth = thickness * np.sqrt(height[vy, vx] / max(height.max(), 1e-12)) * 0.5 * (cells.sum() ** 0.5) / size
    x = (vx - gw / 2) / size
    y = (gh / 2 - vy) / size
    front = np.column_stack([x, y, depth])
    back = np.column_stack([x, y, -depth])[~rim]
    vertices = np.vstack([front, back])
    cy, cx = np.nonzero(cells)
    a, b = index[cy, cx], index[cy, cx + 1]
    c, d = index[cy + 1, cx], index[cy + 1, cx + 1]
    # Each cell's diagonal runs through its corner with both coordinates odd (the centre of a coarse cell,
    # always inside), so no triangle lies wholly on the rim.
    on_ad = (cy % 2) == (cx % 2)
    front_faces = np.concatenate([
        np.column_stack([a, c, d])[on_ad], np.column_stack([a, d, b])[on_ad],
        np.column_stack([a, c, b])[~on_ad], np.column_stack([b, c, d])[~on_ad]])
    back_faces = back_index[front_faces][:, ::-1]
    faces = np.concatenate([front_faces, back_faces])
    report(0.8, "texturing from the image")
    # Texture: every vertex at its place in the image (front and back alike).
    u = vx / gw
    v = 1.0 - vy / gh
    uv = np.vstack([np.column_stack([u, v]), np.column_stack([u, v])[~rim]])
    # Rim vertices sample just outside the object, where transparent pixels hold any colour (often black):
    # give every outside pixel the colour of the nearest object pixel.
    nearest = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
    texture = Image.fromarray(np.ascontiguousarray(rgba[nearest[0], nearest[1], :3]))
    if max(texture.size) > texture_size:
        texture.thumbnail((texture_size, texture_size), Image.Resampling.LANCZOS)
    # Explicitly not metallic: glTF's default metallicFactor is 1, which renders a texture dark and mirror-like.
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=texture, baseColorFactor=[255, 255, 255, 255],
                                                   metallicFactor=0.0, roughnessFactor=0.9)
    mesh = trimesh.Trimesh(vertices, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
                           process=False)
    mesh.fix_normals()
    return mesh


def _remove_pinches(cells: np.ndarray) -> np.ndarray:
    """Fill the cell that joins two cells touching only at a corner: a pinched vertex is not a manifold."""
    cells = cells.copy()
    for _ in range(10):
        p = np.pad(cells, 1)
        nw, ne, sw, se = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]  # cells around each grid vertex
        pinch_a = nw & se & ~ne & ~sw
        pinch_b = ne & sw & ~nw & ~se
        if not (pinch_a.any() or pinch_b.any()):
            return cells
        ys, xs = np.nonzero(pinch_a)  # fill the north-east cell of each such vertex
        cells[np.clip(ys - 1, 0, cells.shape[0] - 1), np.clip(xs, 0, cells.shape[1] - 1)] = True
        ys, xs = np.nonzero(pinch_b)  # fill the north-west cell
        cells[np.clip(ys - 1, 0, cells.shape[0] - 1), np.clip(xs - 1, 0, cells.shape[1] - 1)] = True
    return cells


def _poisson_height(inner: np.ndarray) -> np.ndarray:
    """Solve Δh = -1 on the inner vertices with h = 0 on the rim (5-point Laplacian, sparse direct solve)."""
    ys, xs = np.nonzero(inner)
    n = len(ys)
    height = np.zeros(inner.shape)
    if n == 0:
        return height
    idx = -np.ones(inner.shape, np.int64)
    idx[ys, xs] = np.arange(n)
    rows, cols = [np.arange(n)], [np.arange(n)]
    vals = [np.full(n, 4.0)]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        neighbour = idx[ny, nx]  # inner vertices never touch the grid's edge, so no bounds check is needed
        ok = neighbour >= 0
        rows.append(np.arange(n)[ok])
        cols.append(neighbour[ok])
        vals.append(np.full(ok.sum(), -1.0))
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    height[ys, xs] = spla.spsolve(a.tocsc(), np.ones(n))
    return height
