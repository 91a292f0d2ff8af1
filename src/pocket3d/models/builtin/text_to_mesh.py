"""Built-in text → mesh: a procedural library of object classes. Clip art made to order, not a generative model.

The prompt is read with word lists, not understood:

1. The class: the first noun the library knows (about 200 nouns for 23 classes: "stool" is a chair, "desk" a
   table, "woman" a character, "truck" a car ...). Of nouns written one after another the last counts, as English
   puts the head noun last: a "table lamp" is a lamp, a "tree house" a house. No known noun: a rounded blob on a
   pedestal (class "object"), in the colours asked for.
2. Shape words before the noun: tall/short scale the height, wide/narrow the width, tiny/small/big/huge the whole
   object ("very" squares the factor); round/square where a class has both. Counts anywhere, where a class has
   them: "three-legged", "two towers", "five shelves", "six wheels", "two-storey", "four arms", "three fins".
   Some nouns pick a variant: a stool has no back, a pine tree is a conifer, a truck has a cargo box.
3. Looks (words.py): the colours named go to the object's part groups in turn (a chair's seat and back, then its
   legs), cycling; details with a colour of their own (tyres, windows, eyes, a carrot nose) keep it. A material
   word sets metallic/roughness and a faint pattern (wood grain, brick courses, brushed metal, weave); with no
   colour named, the material's own colour. Without either, each class has its own colours and material.

Each class is a small function placing trimesh primitives (boxes, cylinders, spheres, capsules, tori, lathed
profiles, lofted cross-sections): every part is a closed volume. The seed changes the proportions by a few
percent (same prompt and seed, same bytes). The result is scaled so its largest dimension is 1 (times the size
word), stands on y = 0 with Y up, and faces +Z. Parts become the GLB's nodes, named, under a root node named
after the class; the scene's extras say the class and the noun read. One texture atlas holds a swatch per part
group; each part is box-projected into its swatch (vertices split where the projection or a crease changes).

What it is not: it makes nothing outside its library, ignores relations ("a cat on a chair" is a cat), cannot
do text, logos or faces, and one metallic/roughness covers the whole object (a gold-hilted sword is all one
metal). Glass is not transparent.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import trimesh
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.interpolate import PchipInterpolator

from pocket3d.errors import WarningCode
from pocket3d.models.builtin import MESH_OUTPUTS, builtin_spec
from pocket3d.models.builtin.words import MATERIALS, RGB, Appearance, parse_appearance
from pocket3d.models.spec import Feature, InputRejected, ModelAdapter, ProgressFn, RunInputs, warn

# Tessellation by quality: sections around a revolved part, icosphere subdivisions, points along a profile.
TESSELLATION = {"low": (16, 2, 8), "medium": (32, 3, 16), "high": (64, 4, 32)}
MAX_TEXTURE = 1024  # flat swatches with a faint pattern gain nothing from more pixels
DEFAULT_SEED = 0


class ProceduralTextParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    object_class: str | None = Field(None, description="build this whatever the prompt says: a class name, or a "
                                                        "noun the library knows ('stool' is a chair without a back)")
    variation: float = Field(0.08, ge=0.0, le=0.3, description="how much the seed varies proportions (0: none)")

    @field_validator("object_class")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        if value is None:
            return None
        found = _noun_at(value.strip().lower())
        if found is None:
            raise ValueError(f"unknown object class {value!r}; the classes are: {', '.join(CLASSES)}")
        return found[1]


class ProceduralTextModel(ModelAdapter):
    """Built-in CPU text → mesh (a procedural library of object classes); no weights."""

    Params = ProceduralTextParams
    default_spec = builtin_spec(
        "builtin_procedural", Feature.MESH_GENERATION, {"text"}, MESH_OUTPUTS,
        "Built-in CPU baseline: a procedural object from a fixed library, picked and coloured by the prompt's words")

    def run(self, inputs: RunInputs, params: ProceduralTextParams, progress: ProgressFn) -> dict[str, Path]:
        text = (inputs.text or "").strip()
        if not text and params.object_class is None:
            raise InputRejected("the procedural text model needs a text prompt (or the object_class parameter)")
        progress(0.02, "reading the prompt")
        prompt = read_prompt(text)
        if params.object_class is not None:
            message = f"building a {_NOUNS[params.object_class]} (object_class {params.object_class!r})"
        elif prompt.noun is None:
            message = "building a generic object: the prompt names nothing the library knows"
            warn(progress, WarningCode.UNKNOWN_OBJECT,
                 "the prompt names no object the built-in text model knows, so it built a generic shape (a blob on "
                 f"a pedestal); it knows: {', '.join(c for c in CLASSES if c != 'object')}; parameters.object_class "
                 "picks one")
        else:
            message = f"building a {prompt.object_class} (from the word {prompt.noun!r})"
        progress(0.05, message)
        scene = make_scene(text, object_class=params.object_class, seed=inputs.seed, quality=inputs.quality,
                           texture_size=inputs.texture_resolution, variation=params.variation, progress=progress)
        progress(0.8, "writing the mesh")
        out = inputs.work_dir / "mesh.glb"
        out.write_bytes(scene.export(file_type="glb", include_normals=True))
        return {"mesh": out}


# -- the prompt -------------------------------------------------------------------------------------------------

_NUMBERS = {"one": 1, "single": 1, "two": 2, "twin": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
# Words after a number that say what is counted, as each class reads them.
_COUNTED = {
    "leg": "leg", "legs": "leg", "legged": "leg", "tower": "tower", "towers": "tower", "towered": "tower",
    "shelf": "shelf", "shelves": "shelf", "shelved": "shelf", "level": "shelf", "levels": "shelf",
    "wheel": "wheel", "wheels": "wheel", "wheeled": "wheel", "wheeler": "wheel",
    "storey": "floor", "storeys": "floor", "story": "floor", "stories": "floor", "floor": "floor",
    "floors": "floor", "fin": "fin", "fins": "fin", "finned": "fin", "arm": "arm", "arms": "arm", "armed": "arm",
    "tier": "tier", "tiers": "tier", "tiered": "tier", "layer": "tier", "layers": "tier",
    "ball": "ball", "balls": "ball", "seat": "seat", "seats": "seat", "seater": "seat", "pillow": "pillow",
    "pillows": "pillow", "mast": "mast", "masts": "mast", "masted": "mast",
}
_SIZES = {  # word: (what it scales, factor)
    "tall": ("height", 1.35), "high": ("height", 1.35), "short": ("height", 0.7), "low": ("height", 0.7),
    "squat": ("height", 0.7), "wide": ("width", 1.35), "broad": ("width", 1.35), "fat": ("width", 1.35),
    "chunky": ("width", 1.3), "narrow": ("width", 0.72), "thin": ("width", 0.72), "slim": ("width", 0.72),
    "skinny": ("width", 0.72), "slender": ("width", 0.72), "tiny": ("scale", 0.4), "miniature": ("scale", 0.4),
    "mini": ("scale", 0.4), "small": ("scale", 0.7), "little": ("scale", 0.7), "big": ("scale", 1.4),
    "large": ("scale", 1.4), "huge": ("scale", 2.0), "giant": ("scale", 2.0), "enormous": ("scale", 2.0),
    "gigantic": ("scale", 2.0), "massive": ("scale", 2.0),
}
_INTENSIFIERS = {"very", "extra", "super", "really"}
_ROUND = {"round": True, "circular": True, "rounded": True, "oval": True, "square": False, "rectangular": False,
          "squared": False, "boxy": False}
# Nouns written as two words, read as one.
_COMPOUNDS = {("snow", "man"): "snowman", ("snow", "woman"): "snowman", ("space", "ship"): "spaceship",
              ("wine", "glass"): "wineglass", ("tea", "cup"): "teacup", ("book", "shelf"): "bookshelf",
              ("book", "case"): "bookcase", ("sail", "boat"): "sailboat", ("row", "boat"): "rowboat",
              ("palm", "tree"): "palm", ("flower", "pot"): "flowerpot", ("arm", "chair"): "armchair"}
# words.py reads "pine" and "oak" as wood; in a prompt for a tree they name the species, not a material.
_TREE_SPECIES = {"pine", "oak"}


@dataclass(frozen=True)
class Prompt:
    """What the words say about the shape."""

    object_class: str
    noun: str | None  # the word the class was read from (singular), None when no known noun was found
    words: frozenset[str]
    height: float = 1.0
    width: float = 1.0
    scale: float = 1.0
    round: bool | None = None
    counts: dict[str, int] = field(default_factory=dict)


def tokens(text: str) -> list[str]:
    found = re.findall(r"[a-z]+|\d+", text.lower())
    out: list[str] = []
    for word in found:
        if out and (out[-1], word) in _COMPOUNDS:
            out[-1] = _COMPOUNDS[(out[-1], word)]
        else:
            out.append(word)
    return out


def _singulars(word: str) -> list[str]:
    forms = [word]
    if word.endswith("ves"):
        forms += [word[:-3] + "f", word[:-3] + "fe"]
    if word.endswith("ies"):
        forms.append(word[:-3] + "y")
    if word.endswith("es"):
        forms.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        forms.append(word[:-1])
    return forms


def _noun_at(word: str) -> tuple[str, str] | None:
    """(class, singular noun) when the word names a class of the library."""
    for form in _singulars(word):
        if form in _NOUNS:
            return _NOUNS[form], form
    return None


def _find_noun(words: list[str]) -> tuple[int, str, str] | None:
    """(position, class, noun) of the head of the first run of known nouns."""
    for i, word in enumerate(words):
        found = _noun_at(word)
        if found is None:
            continue
        end = i
        while end + 1 < len(words) and _noun_at(words[end + 1]) is not None:
            end += 1
        return (end, *_noun_at(words[end]))
    return None


def classify(text: str) -> str:
    """The class a prompt builds: the head of its first known noun, else "object"."""
    found = _find_noun(tokens(text))
    return found[1] if found else "object"


def read_prompt(text: str) -> Prompt:
    words = tokens(text)
    found = _find_noun(words)
    position, name, noun = found if found else (len(words), "object", None)
    sizes = {"height": 1.0, "width": 1.0, "scale": 1.0}
    round_: bool | None = None
    for i, word in enumerate(words[:position]):  # "a tall man with short hair" is tall
        if word in _SIZES:
            what, factor = _SIZES[word]
            sizes[what] *= factor ** (2 if i > 0 and words[i - 1] in _INTENSIFIERS else 1)
        elif word in _ROUND:
            round_ = _ROUND[word]
    counts: dict[str, int] = {}
    for i, word in enumerate(words[:-1]):
        number = int(word) if word.isdigit() else _NUMBERS.get(word)
        if number is not None and words[i + 1] in _COUNTED:
            counts.setdefault(_COUNTED[words[i + 1]], number)
    return Prompt(name, noun, frozenset(words), round=round_, counts=counts, **sizes)


def appearance_of(text: str, object_class: str) -> Appearance:
    words = tokens(text)
    if object_class == "tree":
        words = [w for w in words if w not in _TREE_SPECIES]
    return parse_appearance(" ".join(words))


# -- the library ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Group:
    """Parts painted alike: one swatch of the texture atlas."""

    name: str
    colour: RGB  # when the prompt names none
    pattern: str = "plain"
    fixed: bool = False  # keeps its colour and pattern whatever the prompt says (tyres, windows, eyes)


@dataclass
class Part:
    name: str
    mesh: trimesh.Trimesh
    group: int


@dataclass(frozen=True)
class ObjectClass:
    name: str
    build: Callable[[Kit], None]
    groups: tuple[Group, ...]
    nouns: tuple[str, ...]
    material: tuple[float, float] = (0.0, 0.8)  # metallic, roughness when the prompt names no material


LIBRARY: dict[str, ObjectClass] = {}
_NOUNS: dict[str, str] = {}


def _object_class(name: str, nouns: Sequence[str], groups: Sequence[Group],
                  material: tuple[float, float] = (0.0, 0.8)) -> Callable:
    def register(build: Callable[[Kit], None]) -> Callable[[Kit], None]:
        LIBRARY[name] = ObjectClass(name, build, tuple(groups), (name, *nouns), material)
        for noun in (name, *nouns):
            if _NOUNS.setdefault(noun, name) != name:
                raise ValueError(f"{noun!r} names both {_NOUNS[noun]} and {name}")
        return build
    return register


_Z_TO_Y = trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0])


@lru_cache(maxsize=8)
def _unit_sphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """trimesh's icosphere takes milliseconds to subdivide; a tree or a character has a dozen."""
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    vertices, faces = sphere.vertices.copy(), sphere.faces.copy()
    vertices.flags.writeable = faces.flags.writeable = False
    return vertices, faces


class Kit:
    """What a class's builder works with: the prompt's shape, seeded variation, tessellation, the parts made.

    Primitives are Y-up and placed in the object's own units (about a metre); the scene is scaled afterwards.
    """

    def __init__(self, prompt: Prompt, rng: np.random.Generator, quality: str, variation: float):
        self.prompt = prompt
        self.noun = prompt.noun or ""
        self.height, self.width, self.round = prompt.height, prompt.width, prompt.round
        self.rng = rng
        self.sections, self.subdivisions, self.profile_points = TESSELLATION.get(quality, TESSELLATION["medium"])
        self.variation = variation
        self.parts: list[Part] = []
        self.colours: dict[int, RGB] = {}  # a variant's own default colour for a group (a pig is pink)

    def vary(self, value: float) -> float:
        """The value changed by up to ±variation, from the seed."""
        return value * (1.0 + self.variation * self.rng.uniform(-1.0, 1.0))

    def count(self, what: str, default: int, low: int, high: int) -> int:
        return int(np.clip(self.prompt.counts.get(what, default), low, high))

    def has(self, *words: str) -> bool:
        return self.noun in words or not self.prompt.words.isdisjoint(words)

    def add(self, name: str, group: int, *meshes: trimesh.Trimesh) -> None:
        mesh = meshes[0] if len(meshes) == 1 else trimesh.util.concatenate(meshes)
        self.parts.append(Part(name, mesh, group))

    # primitives

    def box(self, size: Sequence[float], centre: Sequence[float]) -> trimesh.Trimesh:
        return trimesh.creation.box(extents=size, transform=trimesh.transformations.translation_matrix(centre))

    def rod(self, start: Sequence[float], end: Sequence[float], radius: float,
            sections: int | None = None) -> trimesh.Trimesh:
        return trimesh.creation.cylinder(radius=radius, segment=[start, end], sections=sections or self.sections)

    def ball(self, radius: float, centre: Sequence[float], scale: Sequence[float] = (1, 1, 1),
             subdivisions: int | None = None) -> trimesh.Trimesh:
        vertices, faces = _unit_sphere(subdivisions or self.subdivisions)
        return trimesh.Trimesh(vertices * radius * np.asarray(scale) + np.asarray(centre), faces, process=False)

    def pill(self, start: Sequence[float], end: Sequence[float], radius: float) -> trimesh.Trimesh:
        """A capsule whose end caps' centres are start and end."""
        start, end = np.asarray(start, float), np.asarray(end, float)
        axis = end - start
        length = float(np.linalg.norm(axis))
        mesh = trimesh.creation.capsule(height=length, radius=radius,
                                        count=[max(4, self.sections // 2), self.sections])  # centred on z
        mesh.apply_transform(trimesh.geometry.align_vectors([0, 0, 1], axis / length))
        mesh.apply_translation((start + end) / 2)
        return mesh

    def lathe(self, profile: Sequence[Sequence[float]], centre: Sequence[float] = (0, 0, 0)) -> trimesh.Trimesh:
        """A solid of revolution about the vertical axis through centre; profile is (radius, y) pairs, running
        counter-clockwise (out along the bottom, up the outside, back in along the top), ends on the axis or
        closed."""
        transform = trimesh.transformations.translation_matrix(centre) @ _Z_TO_Y
        mesh = trimesh.creation.revolve(np.asarray(profile, float), sections=self.sections, transform=transform)
        return _outward(mesh)

    def disc(self, radius: float, bottom: float, height: float, x: float = 0.0, z: float = 0.0) -> trimesh.Trimesh:
        return self.lathe([(0, bottom), (radius, bottom), (radius, bottom + height), (0, bottom + height)],
                          (x, 0, z))

    def curve(self, points: Sequence[Sequence[float]], count: int | None = None) -> np.ndarray:
        """A smooth (radius, y) profile through points, without overshoot (monotone cubic), evenly in y."""
        points = np.asarray(points, float)
        ys = np.linspace(points[0, 1], points[-1, 1], count or self.profile_points)
        return np.column_stack([PchipInterpolator(points[:, 1], points[:, 0])(ys), ys])

    def tube(self, path: Sequence[Sequence[float]], radius: float | Sequence[float],
             up: Sequence[float] = (0, 0, 1)) -> trimesh.Trimesh:
        """A closed tube along a 3D path; up must not be along the path (for a path in a plane: its normal)."""
        path = np.asarray(path, float)
        radii = np.broadcast_to(np.asarray(radius, float), (len(path),))
        tangents = np.gradient(path, axis=0)
        tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
        side = np.cross(tangents, up)
        side /= np.linalg.norm(side, axis=1, keepdims=True)
        normal = np.cross(side, tangents)
        angles = np.linspace(0, 2 * np.pi, max(8, self.sections // 2), endpoint=False)
        rings = [p + r * (np.cos(angles)[:, None] * s + np.sin(angles)[:, None] * n)
                 for p, r, s, n in zip(path, radii, side, normal, strict=True)]
        return loft(rings)

    def prism(self, outline: Sequence[Sequence[float]], axis: int, start: float, end: float) -> trimesh.Trimesh:
        """A polygon (in the plane across `axis`, coordinates in x, y, z order less that axis) extruded from start
        to end along the axis; the polygon must be star-shaped about its centroid."""
        outline = np.asarray(outline, float)
        return loft([np.insert(outline, axis, at, axis=1) for at in (start, end)])


def loft(rings: Sequence[np.ndarray]) -> trimesh.Trimesh:
    """A closed surface through rings of the same number of points (in order around each), the first and last
    capped by fans from their centroids; outward facing whichever way the rings run."""
    stack = np.asarray(rings, float)
    m, n, _ = stack.shape
    vertices = np.vstack([stack.reshape(-1, 3), stack[0].mean(axis=0), stack[-1].mean(axis=0)])
    i = (np.arange(m - 1) * n)[:, None]
    j = np.arange(n)[None, :]
    a, b = i + j, i + (j + 1) % n
    c, d = a + n, b + n
    sides = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    ring = np.arange(n)
    first = np.column_stack([np.full(n, m * n), (ring + 1) % n, ring])
    last = np.column_stack([np.full(n, m * n + 1), (m - 1) * n + ring, (m - 1) * n + (ring + 1) % n])
    mesh = trimesh.Trimesh(vertices, np.concatenate([sides, first, last]), process=False)
    return _outward(mesh)


def _outward(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    if mesh.volume < 0:
        mesh.invert()
    return mesh


# Colours the classes use (words.py's scale: sRGB 0..1).
WOOD, DARK_WOOD, LIGHT_WOOD = (0.55, 0.36, 0.20), (0.36, 0.22, 0.12), (0.78, 0.62, 0.42)
GLASS, RUBBER, BLACK, WHITE = (0.45, 0.60, 0.72), (0.07, 0.07, 0.07), (0.05, 0.05, 0.05), (0.94, 0.94, 0.94)
METAL, DARK_METAL, GOLD, CREAM = (0.72, 0.73, 0.76), (0.30, 0.30, 0.33), (0.85, 0.66, 0.22), (0.92, 0.88, 0.78)
RED, LEAF, BARK, SKIN = (0.78, 0.14, 0.11), (0.24, 0.52, 0.18), (0.40, 0.27, 0.16), (0.91, 0.72, 0.58)


def _around(count: int, rx: float, rz: float, square: bool) -> list[tuple[float, float]]:
    """Where count legs stand under a seat or top of half-size rx by rz: its corners, or evenly around."""
    if square and count == 4:
        return [(sx * rx, sz * rz) for sx in (-1, 1) for sz in (-1, 1)]
    angles = np.pi / 2 + np.pi / count + 2 * np.pi * np.arange(count) / count  # symmetric about the z axis
    return [(rx * np.cos(a), rz * np.sin(a)) for a in angles]


@_object_class("chair", ["stool", "armchair", "throne", "bench", "barstool"],
               [Group("seat", LIGHT_WOOD, "wood"), Group("legs", WOOD, "wood")])
def _chair(k: Kit) -> None:
    stool, bench = k.has("stool", "barstool"), k.noun == "bench"
    legs = k.count("leg", 4, 1, 8)
    width = k.vary(1.25 if bench else 0.46) * k.width
    depth = k.vary(0.44)
    seat_y = k.vary(0.62 if k.noun == "barstool" else 0.46) * k.height
    thick = 0.05
    round_seat = k.round if k.round is not None else (stool or legs == 3)
    if round_seat:
        k.add("seat", 0, k.disc(max(width, depth) / 2, seat_y - thick, thick))
        depth = width = max(width, depth)
    else:
        k.add("seat", 0, k.box([width, thick, depth], [0, seat_y - thick / 2, 0]))
    if legs == 1:
        k.add("leg_1", 1, k.rod([0, 0.03, 0], [0, seat_y - thick, 0], 0.035))
        k.add("foot", 1, k.disc(width * 0.38, 0, 0.04))
    else:
        inset = 0.035
        for i, (x, z) in enumerate(_around(legs, width / 2 - inset, depth / 2 - inset, not round_seat)):
            leg = (k.rod([x, 0, z], [x, seat_y - thick, z], 0.021) if round_seat
                   else k.box([0.04, seat_y - thick, 0.04], [x, (seat_y - thick) / 2, z]))
            k.add(f"leg_{i + 1}", 1, leg)
    if stool:
        return
    back = k.vary(0.44) * k.height
    post_x = width / 2 - 0.025 if not round_seat else width * 0.3
    back_z = -depth / 2 + 0.02 if not round_seat else -depth * 0.4
    for side, x in (("left", -post_x), ("right", post_x)):
        k.add(f"back_post_{side}", 1, k.box([0.04, back, 0.04], [x, seat_y + back / 2, back_z]))
    k.add("backrest", 0, k.box([2 * post_x + 0.04, back * 0.5, 0.035], [0, seat_y + back * 0.72, back_z]))
    if k.noun in ("armchair", "throne"):
        for side, x in (("left", -width / 2), ("right", width / 2)):
            k.add(f"arm_{side}", 0, k.box([0.05, 0.04, depth], [x, seat_y + 0.22, 0]))
            k.add(f"arm_post_{side}", 1, k.box([0.04, 0.22, 0.04], [x, seat_y + 0.11, depth / 2 - 0.03]))


@_object_class("table", ["desk", "workbench", "nightstand", "counter"],
               [Group("top", LIGHT_WOOD, "wood"), Group("legs", WOOD, "wood")])
def _table(k: Kit) -> None:
    low = k.has("coffee", "nightstand")
    height = k.vary(0.45 if low else 0.75) * k.height
    width, depth = k.vary(1.2) * k.width, k.vary(0.72)
    thick = 0.05
    round_top = bool(k.round)
    legs = k.count("leg", 1 if round_top else 4, 1, 8)
    if round_top:
        radius = k.vary(0.5) * k.width
        width = depth = 2 * radius
        k.add("top", 0, k.disc(radius, height - thick, thick))
    else:
        k.add("top", 0, k.box([width, thick, depth], [0, height - thick / 2, 0]))
    under = height - thick
    if legs == 1:
        k.add("pedestal", 1, k.rod([0, 0.03, 0], [0, under, 0], 0.06))
        k.add("foot", 1, k.disc(min(width, depth) * 0.3, 0, 0.05))
    else:
        inset = 0.06
        for i, (x, z) in enumerate(_around(legs, width / 2 - inset, depth / 2 - inset, not round_top)):
            k.add(f"leg_{i + 1}", 1, k.rod([x, 0, z], [x, under, z], 0.03) if round_top
                  else k.box([0.055, under, 0.055], [x, under / 2, z]))
    if k.noun == "desk" and not round_top:
        drawers = under * 0.55
        k.add("drawers", 1, k.box([width * 0.3, drawers, depth * 0.9],
                                  [width / 2 - width * 0.15 - 0.03, under - drawers / 2, 0]))


@_object_class("mug", ["tankard", "stein"],
               [Group("body", (0.16, 0.42, 0.55)), Group("handle", (0.16, 0.42, 0.55))], material=(0.0, 0.3))
def _mug(k: Kit) -> None:
    radius, height = k.vary(0.4) * k.width, k.vary(0.95) * k.height
    wall, bottom = 0.05, 0.07
    k.add("body", 0, k.lathe([(0, 0), (radius - 0.02, 0), (radius, 0.02), (radius, height),
                              (radius - wall, height), (radius - wall, bottom), (0, bottom)]))
    theta = np.linspace(-np.pi / 2, np.pi / 2, max(8, k.profile_points))
    reach, span = k.vary(0.24) * height, 0.3 * height
    path = np.column_stack([radius - wall / 2 + reach * np.cos(theta), height * 0.5 + span * np.sin(theta),
                            np.zeros_like(theta)])
    k.add("handle", 1, k.tube(path, 0.045 * height))


@_object_class("cup", ["teacup", "goblet", "chalice", "wineglass", "glass"],
               [Group("cup", WHITE), Group("saucer", (0.72, 0.80, 0.92))], material=(0.0, 0.25))
def _cup(k: Kit) -> None:
    if k.has("goblet", "chalice", "wineglass", "glass"):
        height, radius = k.vary(1.0) * k.height, k.vary(0.3) * k.width
        bowl_y = height * 0.45
        outer = k.curve([(0.02, bowl_y), (radius * 0.75, bowl_y + 0.12), (radius, height * 0.8),
                         (radius * 0.92, height)])
        inner = (outer[::-1] - [0.02, 0])[:-2]
        inner[:, 0] = np.maximum(inner[:, 0], 0.005)
        k.add("bowl", 0, k.lathe([(0, bowl_y), *outer, *inner, (0, inner[-1, 1])]))
        k.add("stem", 0, k.rod([0, 0.02, 0], [0, bowl_y + 0.02, 0], 0.025))
        k.add("foot", 1, k.lathe([(0, 0), (radius * 0.75, 0), (radius * 0.7, 0.025), (0, 0.04)]))
        return
    radius, height, foot = k.vary(0.4) * k.width, k.vary(0.36) * k.height, 0.03
    lift = 0.04  # standing on the saucer
    outer = k.curve([(radius * 0.5, lift + foot), (radius * 0.8, lift + height * 0.35), (radius, lift + height)])
    inner = (outer[::-1] - [0.025, 0])[:-1]
    k.add("bowl", 0, k.lathe([(0, lift), (radius * 0.45, lift), (radius * 0.45, lift + foot), *outer, *inner,
                             (0, inner[-1, 1])]))
    saucer = k.vary(0.75) * k.width
    k.add("saucer", 1, k.lathe([(0, 0), (saucer * 0.6, 0), (saucer, 0.05), (saucer * 0.97, 0.065),
                                (saucer * 0.55, lift), (0, lift)]))
    theta = np.linspace(-np.pi / 2, np.pi / 2, max(8, k.profile_points))
    path = np.column_stack([radius * 0.9 + 0.13 * height * np.cos(theta) - 0.01,
                            lift + height * 0.6 + 0.2 * height * np.sin(theta), np.zeros_like(theta)])
    k.add("handle", 0, k.tube(path, 0.022))


@_object_class("vase", ["pot", "urn", "jar", "amphora", "flowerpot", "planter", "vessel"],
               [Group("body", (0.28, 0.44, 0.70)), Group("foot", CREAM)], material=(0.0, 0.3))
def _vase(k: Kit) -> None:
    height = k.vary(1.0) * k.height
    if k.has("pot", "flowerpot", "planter"):
        k.colours = {0: (0.72, 0.40, 0.26), 1: (0.62, 0.34, 0.22)}  # terracotta
        top, bottom = k.vary(0.42) * k.width, k.vary(0.3) * k.width
        outer = [(bottom, 0), (top, height)]
        k.add("body", 0, k.lathe([(0, 0), *outer, (top - 0.04, height), (bottom - 0.04, 0.06), (0, 0.06)]))
        k.add("rim", 1, k.lathe([(top - 0.02, height * 0.86), (top + 0.04, height * 0.86), (top + 0.04, height),
                                 (top - 0.02, height), (top - 0.02, height * 0.86)]))
        return
    belly = k.vary(0.38 if k.round else 0.3) * k.width
    base, neck, lip = belly * 0.55, belly * 0.38, belly * 0.55
    outer = k.curve([(base, 0), (belly, 0.38 * height), (neck, 0.8 * height), (lip, height)])
    inner = outer[outer[:, 1] > 0.62 * height][::-1] - [0.03, 0]
    k.add("body", 0, k.lathe([(0, 0), *outer, *inner, (0, inner[-1, 1])]))
    k.add("foot", 1, k.disc(base * 1.08, 0, 0.05 * height))


@_object_class("bottle", ["flask", "jug", "wine"],
               [Group("glass", (0.16, 0.45, 0.26), "glass"), Group("label", CREAM),
                Group("cap", GOLD, "metal")], material=(0.0, 0.15))
def _bottle(k: Kit) -> None:
    radius, height = k.vary(0.16) * k.width, k.vary(1.0) * k.height
    neck = radius * 0.36
    outer = k.curve([(radius * 0.96, 0), (radius, 0.03 * height), (radius, 0.56 * height),
                     (radius * 0.5, 0.72 * height), (neck, 0.8 * height), (neck, 0.95 * height)])
    k.add("body", 0, k.lathe([(0, 0), *outer, (0, 0.95 * height)]))
    k.add("label", 1, k.disc(radius * 1.02, 0.18 * height, 0.3 * height))
    k.add("cap", 2, k.disc(neck * 1.18, 0.92 * height, 0.08 * height))


@_object_class("lamp", ["lampshade", "floorlamp", "lantern"],
               [Group("shade", CREAM, "fabric"), Group("stand", (0.55, 0.40, 0.22), "metal"),
                Group("bulb", (1.0, 0.95, 0.72), fixed=True)], material=(0.3, 0.5))
def _lamp(k: Kit) -> None:
    tall = 2.4 if k.has("floor", "floorlamp", "standing") else 1.0
    top = k.vary(0.62 * tall) * k.height
    base = k.vary(0.18) * k.width
    k.add("base", 1, k.lathe([(0, 0), (base, 0), (base, 0.03), (base * 0.6, 0.06), (0, 0.06)]))
    k.add("pole", 1, k.rod([0, 0.05, 0], [0, top, 0], 0.015))
    bottom_r, top_r, shade_h, wall = k.vary(0.27) * k.width, k.vary(0.15) * k.width, k.vary(0.32), 0.012
    y0 = top - shade_h * 0.45
    k.add("shade", 0, k.lathe([(bottom_r - wall, y0), (bottom_r, y0), (top_r, y0 + shade_h),
                               (top_r - wall, y0 + shade_h), (bottom_r - wall, y0)]))
    k.add("bulb", 2, k.ball(0.05, [0, top - 0.01, 0]))


@_object_class("sword", ["blade", "sabre", "saber", "katana", "rapier", "dagger", "knife", "longsword"],
               [Group("blade", (0.80, 0.81, 0.84), "metal"), Group("hilt", GOLD, "metal"),
                Group("grip", (0.35, 0.20, 0.10), "fabric")], material=(0.8, 0.3))
def _sword(k: Kit) -> None:
    short = k.has("dagger", "knife")
    tip = (0.62 if short else 1.0) * k.vary(1.0) * k.height
    width = k.vary(0.045 if k.has("rapier", "katana") else 0.075) * k.width
    start, thick = 0.27, 0.016

    def diamond(y: float, w: float) -> np.ndarray:
        return np.array([(w / 2, y, 0), (0, y, thick / 2 * w / width), (-w / 2, y, 0), (0, y, -thick / 2 * w / width)])

    k.add("blade", 0, loft([diamond(start, width), diamond(tip - 0.1 * (tip - start), width),
                             diamond(tip - 0.02, width * 0.35), diamond(tip, width * 0.02)]))
    if k.noun == "katana":
        k.add("guard", 1, k.disc(0.05, start - 0.02, 0.015))
    else:
        k.add("guard", 1, k.box([k.vary(0.26) * k.width, 0.035, 0.05], [0, start - 0.0175, 0]))
    k.add("grip", 2, k.rod([0, 0.06, 0], [0, start - 0.03, 0], 0.019))
    k.add("pommel", 1, k.ball(0.035, [0, 0.04, 0]))


@_object_class("tree", ["pine", "fir", "spruce", "oak", "palm", "bush", "shrub", "plant", "conifer", "evergreen",
                        "sapling"],
               [Group("foliage", LEAF, "foliage"), Group("trunk", BARK, "wood")])
def _tree(k: Kit) -> None:
    if k.has("pine", "fir", "spruce", "christmas", "conifer", "evergreen", "xmas"):
        trunk_h = k.vary(0.25) * k.height
        k.add("trunk", 1, k.lathe([(0, 0), (0.07, 0), (0.05, trunk_h + 0.1), (0, trunk_h + 0.1)]))
        tiers = k.count("tier", 3, 1, 8)
        span = k.vary(0.95) * k.height
        for i in range(tiers):
            y = trunk_h + span * i / tiers * 0.85
            radius = k.vary(0.42 - 0.25 * i / max(tiers - 1, 1)) * k.width
            cone_h = span / tiers * 1.6
            k.add(f"tier_{i + 1}", 0, k.lathe([(0, y), (radius, y), (0, y + cone_h)]))
        return
    if k.noun == "palm":
        top = k.vary(1.0) * k.height
        t = np.linspace(0, 1, max(6, k.profile_points // 2))
        path = np.column_stack([0.12 * t ** 2, top * t, np.zeros_like(t)])
        k.add("trunk", 1, k.tube(path, np.linspace(0.055, 0.035, len(t))))
        for i in range(7):
            angle = 2 * np.pi * i / 7 + k.rng.uniform(-0.2, 0.2)
            direction = np.array([np.cos(angle), -0.35, np.sin(angle)])
            centre = path[-1] + direction * 0.2
            leaf = k.ball(0.22, [0, 0, 0], scale=(1, 0.06, 0.28))
            leaf.apply_transform(trimesh.geometry.align_vectors([1, 0, 0], direction / np.linalg.norm(direction)))
            leaf.apply_translation(centre)
            k.add(f"leaf_{i + 1}", 0, leaf)
        return
    low = k.has("bush", "shrub", "plant")
    trunk_h = k.vary(0.08 if low else 0.45) * k.height
    k.add("trunk", 1, k.lathe([(0, 0), (0.07, 0), (0.045, trunk_h + 0.12), (0, trunk_h + 0.12)]))
    radius = k.vary(0.3) * k.width
    crown = np.array([0, trunk_h + radius * k.height * 0.85, 0])
    k.add("crown", 0, k.ball(radius, crown, scale=(1, k.height, 1)))
    for i in range(6):
        angle = 2 * np.pi * i / 6 + k.rng.uniform(-0.3, 0.3)
        lift = k.rng.uniform(-0.2, 0.5)
        direction = np.array([np.cos(angle), lift, np.sin(angle)])
        direction /= np.linalg.norm(direction)
        centre = crown + direction * radius * 0.75 * np.array([1, k.height, 1])
        k.add(f"leaves_{i + 1}", 0, k.ball(k.vary(0.6) * radius, centre, scale=(1, k.height ** 0.5, 1)))


@_object_class("house", ["home", "cottage", "cabin", "hut", "barn", "building", "shed", "skyscraper", "villa",
                         "bungalow"],
               [Group("walls", (0.90, 0.85, 0.72)), Group("roof", (0.58, 0.20, 0.14), "brick"),
                Group("door", (0.45, 0.28, 0.14), "wood"), Group("windows", GLASS, "glass", fixed=True)])
def _house(k: Kit) -> None:
    tower = k.noun == "skyscraper"
    floors = k.count("floor", 8 if tower else 1, 1, 12)
    width, depth = k.vary(0.45 if tower else 1.0) * k.width, k.vary(0.45 if tower else 0.8)
    storey = k.vary(0.42) * k.height
    walls = floors * storey
    k.add("walls", 0, k.box([width, walls, depth], [0, walls / 2, 0]))
    if tower:
        k.add("roof", 1, k.box([width * 0.9, 0.06, depth * 0.9], [0, walls + 0.03, 0]))
    else:
        rise, eaves = k.vary(0.38), 0.08
        ridge = [(walls - 0.005, -depth / 2 - eaves), (walls - 0.005, depth / 2 + eaves), (walls + rise, 0)]
        k.add("roof", 1, k.prism(ridge, 0, -width / 2 - eaves, width / 2 + eaves))
        k.add("chimney", 1, k.box([0.1, 0.3, 0.1], [width * 0.28, walls + rise * 0.6, -depth * 0.15]))
    k.add("door", 2, k.box([0.18, 0.32, 0.03], [0, 0.16, depth / 2]))
    panes = []
    columns = 2 if not tower else 3
    for floor in range(floors):
        y = floor * storey + storey * 0.55
        for c in range(columns):
            x = (c - (columns - 1) / 2) * width / columns * (1.2 if floor == 0 and columns == 2 else 1.0)
            if floor == 0 and abs(x) < 0.15:
                continue  # the door is there
            panes.append(k.box([min(0.16, width / columns * 0.6), storey * 0.35, 0.02], [x, y, depth / 2]))
        for x in (-width / 2, width / 2):
            panes.append(k.box([0.02, storey * 0.35, min(0.16, depth * 0.3)], [x, y, 0]))
    k.add("windows", 3, *panes)


@_object_class("castle", ["tower", "fortress", "fort", "citadel", "palace", "turret", "lighthouse"],
               [Group("walls", (0.64, 0.62, 0.57), "brick"), Group("roofs", (0.24, 0.30, 0.55)),
                Group("gate", (0.40, 0.25, 0.12), "wood")])
def _castle(k: Kit) -> None:
    if k.noun in ("tower", "turret", "lighthouse"):
        radius, height = k.vary(0.2) * k.width, k.vary(1.0) * k.height
        _tower(k, "tower", 0.0, 0.0, radius, height)
        k.add("door", 2, k.box([0.12, 0.2, 0.06], [0, 0.1, radius - 0.01]))
        return
    towers = k.count("tower", 4, 1, len(_TOWER_PLACES))
    side, height, thick = k.vary(1.0) * k.width, k.vary(0.32) * k.height, 0.08
    half = side / 2
    for name, size, centre in (("wall_front", [side, height, thick], [0, height / 2, half]),
                               ("wall_back", [side, height, thick], [0, height / 2, -half]),
                               ("wall_left", [thick, height, side], [-half, height / 2, 0]),
                               ("wall_right", [thick, height, side], [half, height / 2, 0])):
        k.add(name, 0, k.box(size, centre))
    merlons = []
    for t in np.linspace(-half + 0.08, half - 0.08, 7):
        for x, z, along_x in ((t, half, True), (t, -half, True), (half, t, False), (-half, t, False)):
            size = [0.06, 0.06, thick] if along_x else [thick, 0.06, 0.06]
            merlons.append(k.box(size, [x, height + 0.03, z]))
    k.add("battlements", 0, *merlons)
    k.add("keep", 0, k.box([side * 0.36, height * 1.7, side * 0.36], [0, height * 0.85, -side * 0.1]))
    k.add("keep_roof", 1, k.lathe([(0, height * 1.7), (side * 0.27, height * 1.7), (0, height * 1.7 + 0.28)],
                                  (0, 0, -side * 0.1)))
    for i, (x, z) in enumerate(_TOWER_PLACES[towers]):
        _tower(k, f"tower_{i + 1}", x * half, z * half, k.vary(0.12) * k.width, height * 1.55)
    k.add("gate", 2, k.box([side * 0.2, height * 0.6, 0.04], [0, height * 0.3, half + thick / 2]))


# Where n towers stand on the walls' square (x, z in half-sides; the gate is at the front, +z).
_CORNERS = [(-1, 1), (1, 1), (1, -1), (-1, -1)]
_TOWER_PLACES = {1: [(0, -1)], 2: _CORNERS[:2], 3: [*_CORNERS[:2], (0, -1)], 4: _CORNERS,
                 5: [*_CORNERS, (0, -1)], 6: [*_CORNERS, (-1, 0), (1, 0)], 7: [*_CORNERS, (-1, 0), (1, 0), (0, -1)]}


def _tower(k: Kit, name: str, x: float, z: float, radius: float, height: float) -> None:
    k.add(name, 0, k.disc(radius, 0, height, x, z))
    count = 8
    merlons = []
    for i in range(count):
        a = 2 * np.pi * i / count
        merlons.append(k.box([radius * 0.5, 0.05, radius * 0.35],
                             [x + radius * 0.85 * np.cos(a), height + 0.025, z + radius * 0.85 * np.sin(a)]))
    k.add(f"{name}_battlements", 0, *merlons)
    if k.round is not False:  # a "square tower" keeps a flat top
        k.add(f"{name}_roof", 1, k.lathe([(0, height), (radius * 1.15, height), (0, height + radius * 2.2)],
                                         (x, 0, z)))


@_object_class("car", ["automobile", "truck", "lorry", "van", "bus", "jeep", "taxi", "vehicle", "pickup", "sedan",
                       "coupe", "suv"],
               [Group("body", RED), Group("roof", WHITE), Group("tyres", RUBBER, fixed=True),
                Group("windows", GLASS, "glass", fixed=True), Group("lights", (1.0, 0.93, 0.65), fixed=True),
                Group("hubcaps", METAL, "metal", fixed=True)], material=(0.3, 0.35))
def _car(k: Kit) -> None:
    truck, bus = k.has("truck", "lorry", "pickup"), k.has("bus", "van")
    length = k.vary(1.5 if bus or truck else 1.0)
    width = k.vary(0.46 if not bus else 0.5) * k.width
    wheel = k.vary(0.1)
    wheels = k.count("wheel", 6 if truck else 4, 4, 10)
    axles = max(2, round(wheels / 2))
    floor, body_h = wheel * 0.9, k.vary(0.17) * k.height
    top = floor + body_h
    if bus:
        top = floor + k.vary(0.45) * k.height
        k.add("body", 0, k.box([width, top - floor, length], [0, (floor + top) / 2, 0]))
        k.add("roof", 1, k.box([width * 0.96, 0.03, length * 0.96], [0, top + 0.015, 0]))
        band = [k.box([width * 1.01, (top - floor) * 0.28, length * 0.8], [0, floor + (top - floor) * 0.7, -0.02]),
                k.box([width * 0.8, (top - floor) * 0.35, 0.02], [0, floor + (top - floor) * 0.66, length / 2])]
        k.add("windows", 3, *band)
    elif truck:
        cab = length * 0.3
        cab_top = floor + k.vary(0.36) * k.height
        k.add("cab", 0, k.box([width, cab_top - floor, cab], [0, (floor + cab_top) / 2, length / 2 - cab / 2]))
        cargo_top = floor + k.vary(0.44) * k.height
        k.add("cargo", 1, k.box([width * 1.02, cargo_top - floor - 0.02, length - cab - 0.03],
                                [0, (floor + cargo_top) / 2 + 0.01, -cab / 2 - 0.015]))
        k.add("chassis", 0, k.box([width * 0.9, 0.06, length], [0, floor + 0.01, 0]))
        k.add("windows", 3, k.box([width * 0.85, (cab_top - floor) * 0.35, 0.02],
                                  [0, cab_top - (cab_top - floor) * 0.25, length / 2]),
              k.box([width * 1.01, (cab_top - floor) * 0.3, cab * 0.5], [0, cab_top - (cab_top - floor) * 0.25,
                                                                         length / 2 - cab * 0.4]))
    else:
        k.add("body", 0, k.box([width, body_h, length], [0, floor + body_h / 2, 0]))
        rise = k.vary(0.15) * k.height
        # The cabin's side outline, a trapezoid in (y, z), extruded across the car.
        cabin = [(top, -length * 0.3), (top, length * 0.16), (top + rise, length * 0.04),
                 (top + rise, -length * 0.22)]
        k.add("cabin", 3, k.prism(cabin, 0, -width * 0.44, width * 0.44))
        k.add("roof", 1, k.box([width * 0.9, 0.02, length * 0.27], [0, top + rise + 0.01, -length * 0.09]))
    lights = []
    for x in (-width * 0.32, width * 0.32):
        lights.append(k.box([0.07, 0.04, 0.02], [x, floor + 0.1, length / 2]))
        lights.append(k.box([0.07, 0.04, 0.02], [x, floor + 0.1, -length / 2]))
    k.add("lights", 4, *lights)
    tyres, caps = [], []
    for z in np.linspace(length * 0.34, -length * 0.34, axles):
        for x in (-width / 2 + 0.02, width / 2 - 0.02):
            side = np.sign(x)
            tyres.append(k.rod([x - 0.04, wheel, z], [x + 0.04, wheel, z], wheel))
            caps.append(k.rod([x, wheel, z], [x + side * 0.045, wheel, z], wheel * 0.5))
    k.add("tyres", 2, *tyres)
    k.add("hubcaps", 5, *caps)


@_object_class("robot", ["android", "droid", "mech", "cyborg", "automaton", "bot"],
               [Group("body", (0.70, 0.72, 0.76), "metal"), Group("limbs", (0.35, 0.37, 0.41), "metal"),
                Group("details", (0.85, 0.22, 0.15)), Group("eyes", (0.30, 0.90, 1.0), fixed=True)],
               material=(0.7, 0.35))
def _robot(k: Kit) -> None:
    leg = k.vary(0.3) * k.height
    width = k.vary(0.38) * k.width
    for side, x in (("left", -0.1), ("right", 0.1)):
        k.add(f"foot_{side}", 1, k.box([0.13, 0.05, 0.2], [x * k.width, 0.025, 0.02]))
        k.add(f"leg_{side}", 1, k.box([0.09, leg, 0.09], [x * k.width, 0.05 + leg / 2, 0]))
    hip = 0.05 + leg
    k.add("pelvis", 1, k.box([width * 0.75, 0.08, 0.15], [0, hip + 0.03, 0]))
    torso = k.vary(0.3) * k.height
    chest = hip + 0.06
    k.add("torso", 0, k.box([width, torso, 0.22], [0, chest + torso / 2, 0]))
    k.add("panel", 2, k.box([width * 0.5, torso * 0.35, 0.02], [0, chest + torso * 0.55, 0.11]))
    shoulder = chest + torso
    k.add("neck", 1, k.rod([0, shoulder - 0.01, 0], [0, shoulder + 0.05, 0], 0.035))
    head = k.vary(0.18)
    k.add("head", 0, k.box([0.24, head, 0.2], [0, shoulder + 0.05 + head / 2, 0]))
    k.add("eyes", 3, *(k.ball(0.026, [x, shoulder + 0.05 + head * 0.58, 0.1]) for x in (-0.055, 0.055)))
    antenna_top = shoulder + 0.05 + head + 0.09
    k.add("antenna", 1, k.rod([0, shoulder + head, 0], [0, antenna_top, 0], 0.008))
    k.add("antenna_ball", 2, k.ball(0.025, [0, antenna_top, 0]))
    pairs = k.count("arm", 2, 2, 6) // 2
    for i in range(pairs):
        y = shoulder - 0.04 - i * torso * 0.4
        for side, sign in (("left", -1), ("right", 1)):
            suffix = f"{side}" if pairs == 1 else f"{side}_{i + 1}"
            x = sign * (width / 2 + 0.05)
            k.add(f"shoulder_{suffix}", 1, k.ball(0.05, [x, y, 0]))
            hand = [x + sign * 0.05, y - k.vary(0.28), 0.02]
            k.add(f"arm_{suffix}", 1, k.rod([x, y, 0], hand, 0.03))
            k.add(f"hand_{suffix}", 2, k.ball(0.045, hand))


@_object_class("character", ["person", "man", "woman", "men", "women", "children", "human", "figure", "people", "boy", "girl", "child", "kid",
                             "humanoid", "goblin", "elf", "alien", "zombie", "knight", "wizard", "witch", "soldier",
                             "warrior", "king", "queen", "prince", "princess", "doll", "mannequin", "lady", "guy",
                             "player", "hero", "villager", "farmer", "pirate", "ninja", "dwarf", "orc", "troll",
                             "baby", "adult", "avatar", "astronaut", "student", "teacher", "doctor"],
               [Group("shirt", (0.25, 0.40, 0.70), "fabric"), Group("trousers", (0.20, 0.22, 0.30), "fabric"),
                Group("shoes", (0.25, 0.15, 0.08)), Group("hair", (0.30, 0.18, 0.08)), Group("skin", SKIN),
                Group("eyes", BLACK, fixed=True)])
def _character(k: Kit) -> None:
    """Standing in a T-pose-like stance (arms out, slightly down), facing +Z: a fair subject for rigging."""
    young = k.has("child", "children", "kid", "boy", "girl", "baby")
    h = k.height
    head_r = k.vary(0.095 if young else 0.075)
    hip, shoulder = k.vary(0.47) * h, k.vary(0.76) * h
    width = k.vary(1.0) * k.width
    for side, sign in (("left", -1), ("right", 1)):
        x = sign * 0.06 * width
        k.add(f"leg_{side}", 1, k.pill([x, 0.08, 0], [x, hip - 0.02, 0], 0.045 * width))
        k.add(f"foot_{side}", 2, k.box([0.07 * width, 0.05, 0.14], [x, 0.025, 0.03]))
    k.add("hips", 1, k.ball(0.1 * width, [0, hip, 0], scale=(1.05, 0.6, 0.7)))
    torso = k.pill([0, hip + 0.04, 0], [0, shoulder - 0.04, 0], 0.11 * width)
    torso.vertices[:, 2] *= 0.65
    k.add("torso", 0, torso)
    if k.has("woman", "women", "girl", "lady", "queen", "princess", "witch"):
        k.add("skirt", 1, k.lathe([(0, hip - 0.17 * h), (0.2 * width, hip - 0.17 * h), (0.1 * width, hip + 0.05),
                                   (0, hip + 0.05)]))
    k.add("neck", 4, k.rod([0, shoulder - 0.03, 0], [0, shoulder + 0.06, 0], 0.035))
    head_y = shoulder + 0.06 + head_r * 0.9
    k.add("head", 4, k.ball(head_r, [0, head_y, 0], scale=(0.9, 1.05, 0.95)))
    k.add("hair", 3, k.ball(head_r * 1.04, [0, head_y + head_r * 0.2, -head_r * 0.15], scale=(0.95, 0.85, 0.95)))
    k.add("eyes", 5, *(k.ball(head_r * 0.13, [x * head_r, head_y + head_r * 0.1, head_r * 0.86])
                       for x in (-0.35, 0.35)))
    if k.has("wizard", "witch"):
        k.add("hat", 3, k.lathe([(0, head_y + head_r * 0.5), (head_r * 1.6, head_y + head_r * 0.5),
                                 (0, head_y + head_r * 3.5)]))
    reach = k.vary(0.45) * width
    for side, sign in (("left", -1), ("right", 1)):
        start = np.array([sign * 0.12 * width, shoulder - 0.01, 0])
        elbow = np.array([sign * (0.12 + reach) / 2, shoulder - 0.035, 0])
        wrist = np.array([sign * reach, shoulder - 0.06, 0])
        k.add(f"upper_arm_{side}", 0, k.pill(start, elbow, 0.036 * width))
        k.add(f"forearm_{side}", 0, k.pill(elbow, wrist, 0.03 * width))
        k.add(f"hand_{side}", 4, k.ball(0.036, wrist + [sign * 0.035, -0.005, 0], scale=(1.2, 0.8, 0.9)))


@_object_class("bookshelf", ["bookcase", "shelf", "shelving", "cabinet", "cupboard", "library"],
               [Group("frame", WOOD, "wood"), Group("books_red", (0.62, 0.16, 0.12), fixed=True),
                Group("books_blue", (0.16, 0.28, 0.55), fixed=True),
                Group("books_green", (0.22, 0.45, 0.26), fixed=True)])
def _bookshelf(k: Kit) -> None:
    levels = k.count("shelf", 5, 1, 10)
    width, height, depth, board = k.vary(0.8) * k.width, k.vary(1.0) * k.height, k.vary(0.3), 0.03
    for side, x in (("left", -width / 2 + board / 2), ("right", width / 2 - board / 2)):
        k.add(f"side_{side}", 0, k.box([board, height, depth], [x, height / 2, 0]))
    k.add("back", 0, k.box([width, height, 0.012], [0, height / 2, -depth / 2 + 0.006]))
    level = (height - board) / levels
    for i in range(levels + 1):
        k.add("top" if i == levels else f"shelf_{i + 1}", 0,
              k.box([width - 2 * board, board, depth], [0, board / 2 + i * level, 0]))
    books: dict[int, list[trimesh.Trimesh]] = {1: [], 2: [], 3: []}
    for i in range(levels):
        x, floor = -width / 2 + board, board + i * level
        while True:
            thick = k.rng.uniform(0.025, 0.055)
            if x + thick > width / 2 - board - 0.005:
                break
            if k.rng.random() < 0.08:  # a gap on the shelf
                x += thick
                continue
            tall = (level - board) * k.rng.uniform(0.62, 0.88)
            books[int(k.rng.integers(1, 4))].append(
                k.box([thick - 0.003, tall, depth * 0.8], [x + thick / 2, floor + tall / 2, 0.01]))
            x += thick
    for group, name in ((1, "books_red"), (2, "books_blue"), (3, "books_green")):
        if books[group]:
            k.add(name, group, *books[group])


@_object_class("sofa", ["couch", "settee", "loveseat", "futon", "divan"],
               [Group("upholstery", (0.42, 0.48, 0.58), "fabric"), Group("cushions", (0.55, 0.60, 0.70), "fabric"),
                Group("feet", DARK_WOOD, "wood")])
def _sofa(k: Kit) -> None:
    seats = k.count("seat", 2 if k.noun == "loveseat" else 3, 1, 6)
    cushion = k.vary(0.42)
    arm, depth = 0.13, k.vary(0.55)
    width = (seats * cushion + 2 * arm) * k.width
    base_y, seat_y, back_h = 0.08, 0.26, k.vary(0.42) * k.height
    k.add("base", 0, k.box([width, seat_y - base_y, depth], [0, (base_y + seat_y) / 2, 0]))
    k.add("back", 0, k.box([width, back_h, 0.14], [0, seat_y + back_h / 2, -depth / 2 + 0.07]))
    for side, sign in (("left", -1), ("right", 1)):
        k.add(f"arm_{side}", 0, k.box([arm, 0.32, depth], [sign * (width / 2 - arm / 2), base_y + 0.16, 0]))
    inner = (width - 2 * arm) / seats
    for i in range(seats):
        x = -width / 2 + arm + inner * (i + 0.5)
        k.add(f"cushion_{i + 1}", 1, k.box([inner - 0.012, 0.09, depth - 0.15], [x, seat_y + 0.045, 0.075]))
    for i, (x, z) in enumerate(_around(4, width / 2 - 0.06, depth / 2 - 0.06, True)):
        k.add(f"foot_{i + 1}", 2, k.rod([x, 0, z], [x, base_y + 0.01, z], 0.025))


@_object_class("bed", ["cot", "crib", "bunk"],
               [Group("frame", WOOD, "wood"), Group("blanket", (0.25, 0.40, 0.65), "fabric"),
                Group("bedding", WHITE, "fabric")])
def _bed(k: Kit) -> None:
    double = k.has("double", "king", "queen", "kingsize")
    length, width = k.vary(1.0), k.vary(0.85 if double else 0.55) * k.width
    pillows = k.count("pillow", 2 if double else 1, 1, 4)
    frame_y, mattress_y = 0.2, 0.32
    head_h = k.vary(0.55) * k.height
    k.add("frame", 0, k.box([width, frame_y - 0.08, length], [0, (frame_y + 0.08) / 2, 0]))
    for i, (x, z) in enumerate(_around(4, width / 2 - 0.03, length / 2 - 0.03, True)):
        k.add(f"leg_{i + 1}", 0, k.box([0.05, 0.09, 0.05], [x, 0.045, z]))
    k.add("headboard", 0, k.box([width, head_h, 0.05], [0, head_h / 2, -length / 2 - 0.025]))
    k.add("footboard", 0, k.box([width, 0.3, 0.04], [0, 0.15, length / 2 + 0.02]))
    k.add("mattress", 2, k.box([width - 0.03, mattress_y - frame_y, length - 0.04],
                               [0, (frame_y + mattress_y) / 2, 0]))
    cover = length * 0.64
    k.add("blanket", 1, k.box([width + 0.01, 0.12, cover], [0, mattress_y - 0.05, length / 2 - cover / 2 - 0.01]))
    spacing = (width - 0.06) / pillows
    for i in range(pillows):
        x = -width / 2 + 0.03 + spacing * (i + 0.5)
        k.add(f"pillow_{i + 1}", 2, k.ball(1.0, [x, mattress_y + 0.03, -length / 2 + 0.14],
                                           scale=(spacing * 0.45, 0.05, 0.1)))


@_object_class("rocket", ["spaceship", "rocketship", "missile", "shuttle", "spacecraft", "starship"],
               [Group("body", (0.93, 0.93, 0.93)), Group("nose_and_fins", RED),
                Group("nozzle", DARK_METAL, "metal"), Group("window", GLASS, "glass", fixed=True)],
               material=(0.3, 0.4))
def _rocket(k: Kit) -> None:
    radius, height = k.vary(0.1) * k.width, k.vary(1.0) * k.height
    base, shoulder = 0.12, 0.68 * height
    k.add("nozzle", 2, k.lathe([(0, 0), (radius * 0.8, 0), (radius * 0.5, base + 0.01), (0, base + 0.01)]))
    k.add("body", 0, k.disc(radius, base, shoulder - base + 0.005))
    nose = k.curve([(radius, shoulder), (radius * 0.8, shoulder + (height - shoulder) * 0.45),
                    (radius * 0.02, height)])
    k.add("nose", 1, k.lathe([(0, shoulder), *nose, (0, height)]))
    fins = k.count("fin", 3, 2, 8)
    reach, thick = k.vary(0.13), 0.015
    outline = [(radius * 0.9, base + 0.26), (radius * 0.9, base), (radius + reach, 0.0), (radius + reach, 0.1)]
    for i in range(fins):
        fin = k.prism([(x, y) for x, y in outline], 2, -thick / 2, thick / 2)
        fin.apply_transform(trimesh.transformations.rotation_matrix(2 * np.pi * i / fins + np.pi / 2, [0, 1, 0]))
        k.add(f"fin_{i + 1}", 1, fin)
    k.add("window", 3, k.ball(radius * 0.4, [0, shoulder - 0.12, radius * 0.92], scale=(1, 1, 0.45)))


@_object_class("boat", ["ship", "sailboat", "yacht", "canoe", "kayak", "rowboat", "dinghy", "galleon", "schooner",
                        "raft"],
               [Group("hull", (0.45, 0.28, 0.15), "wood"), Group("deck", LIGHT_WOOD, "wood"),
                Group("sail", (0.95, 0.95, 0.92), "fabric"), Group("mast", DARK_WOOD, "wood")])
def _boat(k: Kit) -> None:
    rowing = k.has("canoe", "kayak", "rowboat", "dinghy", "raft")
    length, beam = k.vary(1.0), k.vary(0.2 if rowing else 0.32) * k.width
    deck = k.vary(0.12 if rowing else 0.16) * k.height
    stations = max(8, k.profile_points)
    around = np.linspace(0, np.pi, max(7, k.sections // 3))
    rings = []
    for t in np.linspace(0, 1, stations):
        half = beam / 2 * max(np.sqrt(max(1 - ((t - 0.4) / 0.6) ** 2, 0.0)), 0.03)
        if rowing:
            half = beam / 2 * max(np.sin(np.pi * t), 0.03)
        keel = deck * (1 - 0.4 * t ** 2)
        z = (t - 0.5) * length
        rings.append(np.column_stack([half * np.cos(around), deck - keel * np.sin(around), np.full_like(around, z)]))
    k.add("hull", 0, loft(rings))
    if rowing:
        k.add("seat", 1, k.box([beam * 0.8, 0.02, 0.08], [0, deck * 0.8, 0]))
        return
    k.add("cabin", 1, k.box([beam * 0.55, 0.09, length * 0.22], [0, deck + 0.045, -length * 0.22]))
    masts = k.count("mast", 2 if k.has("ship", "galleon", "schooner") else 1, 1, 4)
    for i in range(masts):
        z = length * (0.12 - 0.3 * i)
        top = deck + k.vary(0.7 - 0.1 * i) * k.height
        k.add(f"mast_{i + 1}", 3, k.rod([0, deck, z], [0, top, z], 0.012))
        sail = [(deck + 0.08, z - 0.02), (deck + 0.08, z - length * 0.3), (top - 0.03, z - 0.02)]
        k.add(f"sail_{i + 1}", 2, k.prism(sail, 0, -0.004, 0.004))


@_object_class("mushroom", ["toadstool", "fungus", "fungi"],
               [Group("cap", (0.80, 0.12, 0.10)), Group("stem", (0.93, 0.90, 0.82)),
                Group("spots", (0.97, 0.97, 0.95), fixed=True)])
def _mushroom(k: Kit) -> None:
    stem = k.vary(0.5) * k.height
    stem_r = k.vary(0.1) * k.width
    outline = k.curve([(stem_r * 1.2, 0), (stem_r, stem * 0.4), (stem_r * 0.8, stem)])
    k.add("stem", 1, k.lathe([(0, 0), *outline, (0, stem)]))
    radius, rise = k.vary(0.38) * k.width, k.vary(0.28) * k.height
    rim = stem - 0.06
    theta = np.linspace(0, np.pi / 2, k.profile_points)
    dome = np.column_stack([radius * np.cos(theta), rim + rise * np.sin(theta)])
    dome[-1, 0] = 0
    k.add("cap", 0, k.lathe([(0, stem - 0.02), *dome]))
    spots = []
    for _ in range(int(k.rng.integers(7, 12))):
        t, a = k.rng.uniform(0.2, 1.2), k.rng.uniform(0, 2 * np.pi)
        centre = [radius * np.cos(t) * np.cos(a), rim + rise * np.sin(t), radius * np.cos(t) * np.sin(a)]
        spots.append(k.ball(radius * 0.1, centre, subdivisions=max(1, k.subdivisions - 1)))
    k.add("spots", 2, *spots)


@_object_class("snowman", ["snowwoman"],
               [Group("snow", (0.96, 0.97, 1.0), "snow"), Group("hat", (0.08, 0.08, 0.08)),
                Group("scarf", (0.75, 0.12, 0.12), "fabric"), Group("nose", (0.95, 0.50, 0.10), fixed=True),
                Group("coal", BLACK, fixed=True), Group("sticks", DARK_WOOD, "wood", fixed=True)])
def _snowman(k: Kit) -> None:
    balls = k.count("ball", 3, 2, 5)
    radius = k.vary(0.3) * k.width
    y = radius * 0.92
    centres, radii = [], []
    for i in range(balls):
        r = radius * 0.74 ** i
        if i:
            y += (radii[-1] + r) * 0.8 * k.height
        centres.append(y)
        radii.append(r)
        k.add(f"ball_{i + 1}", 0, k.ball(r, [0, y, 0], scale=(1, k.height, 1)))
    head_y, head_r = centres[-1], radii[-1]
    top = head_y + head_r * 0.8 * k.height
    k.add("hat_brim", 1, k.disc(head_r * 0.95, top - 0.01, 0.015))
    k.add("hat", 1, k.disc(head_r * 0.6, top, head_r * 0.9))
    neck = (centres[-2] + radii[-2] * 0.8 + head_y - head_r * 0.8) / 2
    scarf = trimesh.creation.torus(head_r * 0.78, head_r * 0.16, major_sections=k.sections,
                                   minor_sections=max(8, k.sections // 3))
    scarf.apply_transform(_Z_TO_Y)
    scarf.apply_translation([0, neck, 0])
    k.add("scarf", 2, scarf)
    nose = k.lathe([(0, 0), (head_r * 0.13, 0), (0, head_r * 0.9)])
    nose.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    nose.apply_translation([0, head_y, head_r * 0.85])
    k.add("nose", 3, nose)
    coal = [k.ball(head_r * 0.09, [x * head_r, head_y + head_r * 0.3, head_r * 0.9]) for x in (-0.35, 0.35)]
    body_y, body_r = centres[-2], radii[-2]
    coal += [k.ball(body_r * 0.08, [0, body_y + body_r * dy, body_r * np.sqrt(1 - dy ** 2) * 0.98])
             for dy in (-0.3, 0.1, 0.5)]
    k.add("coal", 4, *coal)
    for side, sign in (("left", -1), ("right", 1)):
        start = [sign * body_r * 0.8, body_y + body_r * 0.3, 0]
        k.add(f"arm_{side}", 5, k.rod(start, [sign * body_r * 2.0, body_y + body_r * 0.9, 0], 0.012, 8))


# Animals share one body plan; these change its proportions: leg length, body length and radius, head radius,
# snout length, ears ("flop", "point", "round", "big"), tail length, and a default colour.
_ANIMALS = {
    "dog": (0.28, 0.5, 0.13, 0.1, 0.1, "flop", 0.22, (0.62, 0.42, 0.24)),
    "cat": (0.22, 0.42, 0.1, 0.085, 0.03, "point", 0.34, (0.50, 0.48, 0.46)),
    "horse": (0.55, 0.7, 0.17, 0.1, 0.2, "point", 0.3, (0.45, 0.28, 0.15)),
    "cow": (0.38, 0.75, 0.22, 0.12, 0.12, "round", 0.3, (0.92, 0.90, 0.86)),
    "pig": (0.16, 0.55, 0.2, 0.12, 0.06, "point", 0.08, (0.95, 0.68, 0.68)),
    "sheep": (0.26, 0.55, 0.2, 0.09, 0.06, "flop", 0.06, (0.95, 0.94, 0.90)),
    "bear": (0.26, 0.62, 0.22, 0.13, 0.07, "round", 0.05, (0.38, 0.24, 0.13)),
    "elephant": (0.45, 0.8, 0.3, 0.18, 0.0, "big", 0.15, (0.55, 0.55, 0.57)),
}
_ANIMAL_WORDS = {"puppy": "dog", "fox": "dog", "wolf": "dog", "kitten": "cat", "lion": "cat", "tiger": "cat",
                 "pony": "horse", "donkey": "horse", "deer": "horse", "zebra": "horse", "bull": "cow", "ox": "cow",
                 "lamb": "sheep", "goat": "sheep"}


@_object_class("animal", ["dog", "puppy", "cat", "kitten", "horse", "pony", "cow", "bull", "ox", "pig", "sheep",
                          "lamb", "goat", "bear", "fox", "wolf", "lion", "tiger", "deer", "donkey", "zebra",
                          "elephant", "pet", "creature", "beast", "quadruped", "mammal", "retriever", "poodle",
                          "terrier", "labrador", "bulldog", "hound"],
               [Group("fur", (0.62, 0.42, 0.24), "fur"), Group("ears_and_tail", (0.40, 0.26, 0.14), "fur"),
                Group("nose_and_eyes", BLACK, fixed=True)])
def _animal(k: Kit) -> None:
    """Four legs (or as many as asked), facing +Z."""
    kind = k.noun if k.noun in _ANIMALS else _ANIMAL_WORDS.get(k.noun, "dog")
    leg, body, girth, head_r, snout, ears, tail, colour = _ANIMALS[kind]
    if kind != "dog":
        k.colours = {0: colour, 1: tuple(c * 0.7 for c in colour)}
    leg, body, girth = k.vary(leg) * k.height, k.vary(body), k.vary(girth) * k.width
    body_y = leg + girth * 0.6
    k.add("body", 0, k.pill([0, body_y, -body / 2], [0, body_y, body / 2], girth))
    legs = k.count("leg", 4, 1, 8)
    rows = (legs + 1) // 2
    leg_r = girth * 0.3
    for i in range(legs):
        row, side = divmod(i, 2)
        z = body / 2 - body * row / max(rows - 1, 1) if rows > 1 else 0.0
        x = 0.0 if (legs % 2 and i == legs - 1) else (side * 2 - 1) * girth * 0.55
        k.add(f"leg_{i + 1}", 0, k.pill([x, leg_r, z], [x, body_y, z], leg_r))
    neck_up = 0.38 if kind == "horse" else head_r * 0.9
    head = np.array([0, body_y + neck_up, body / 2 + girth * 0.6 + (0.1 if kind == "horse" else 0)])
    if kind == "horse":
        k.add("neck", 0, k.pill([0, body_y + girth * 0.3, body / 2], head, girth * 0.5))
    k.add("head", 0, k.ball(head_r, head))
    tip = head + [0, -head_r * 0.2, head_r * 0.7 + snout]
    if snout > 0:
        k.add("snout", 0, k.pill(head + [0, -head_r * 0.2, head_r * 0.5], tip, head_r * (0.55 if snout > 0.1
                                                                                      else 0.45)))
    else:  # the elephant's trunk
        t = np.linspace(0, 1, max(6, k.profile_points // 2))
        path = head + np.column_stack([np.zeros_like(t), -head_r * 0.2 - 0.45 * t ** 1.3, head_r * 0.8 + 0.12 * t])
        k.add("trunk", 0, k.tube(path, np.linspace(head_r * 0.35, head_r * 0.18, len(t)), up=(1, 0, 0)))
        for side, sign in (("left", -1), ("right", 1)):
            k.add(f"tusk_{side}", 2, k.rod(head + [sign * head_r * 0.4, -head_r * 0.5, head_r * 0.5],
                                           head + [sign * head_r * 0.45, -head_r * 0.9, head_r * 1.2], 0.012))
    features = [k.ball(head_r * 0.12, [x * head_r, head[1] + head_r * 0.3, head[2] + head_r * 0.85])
                for x in (-0.45, 0.45)]
    if snout > 0:
        features.append(k.ball(head_r * 0.2, tip + [0, 0.01, head_r * 0.4]))
    k.add("nose_and_eyes", 2, *features)
    for side, sign in (("left", -1), ("right", 1)):
        base = head + [sign * head_r * 0.6, head_r * 0.6, -head_r * 0.1]
        if ears == "point":
            ear = k.lathe([(0, 0), (head_r * 0.3, 0), (0, head_r * 0.7)])
            ear.apply_translation(base - [0, head_r * 0.1, 0])
        elif ears == "flop":
            ear = k.ball(head_r * 0.5, base + [sign * head_r * 0.2, -head_r * 0.55, 0], scale=(0.35, 1.0, 0.6))
        elif ears == "big":
            ear = k.ball(head_r * 0.9, base + [sign * head_r * 0.3, -head_r * 0.5, -head_r * 0.3],
                         scale=(0.15, 1.0, 0.9))
        else:
            ear = k.ball(head_r * 0.28, base, scale=(1, 1, 0.5))
        k.add(f"ear_{side}", 1, ear)
    if tail > 0:
        t = np.linspace(0, 1, max(6, k.profile_points // 2))
        path = np.column_stack([np.zeros_like(t), body_y + girth * 0.4 + tail * 0.7 * t ** 1.5,
                                -body / 2 - girth * 0.7 - tail * 0.6 * t])
        k.add("tail", 1, k.tube(path, np.linspace(girth * 0.16, girth * 0.08, len(t)), up=(1, 0, 0)))


@_object_class("object", [],
               [Group("object", (0.55, 0.62, 0.75)), Group("pedestal", (0.55, 0.54, 0.50), "stone")])
def _object(k: Kit) -> None:
    """The unknown noun: a smooth, seed-shaped pebble on a plinth, in the colours the prompt names."""
    width = k.vary(0.32) * k.width
    k.add("pedestal", 1, k.lathe([(0, 0), (width, 0), (width, 0.04), (width * 0.82, 0.07), (width * 0.78, 0.15),
                                  (width * 0.9, 0.17), (width * 0.9, 0.2), (0, 0.2)]))
    radius = k.vary(0.32) * k.width
    blob = trimesh.creation.icosphere(subdivisions=k.subdivisions, radius=1.0)
    directions = blob.vertices.copy()
    bumps = np.zeros(len(directions))
    for _ in range(4):  # a few broad waves: lumpy, never spiky
        axis = k.rng.normal(size=3)
        bumps += k.rng.uniform(0.03, 0.07) * np.sin(k.rng.uniform(1.5, 3.0) * directions @ (axis / np.linalg.norm(axis))
                                                   + k.rng.uniform(0, 2 * np.pi))
    blob.vertices = directions * (radius * (1 + bumps))[:, None] * [1, 0.85 * k.height, 1]
    blob.apply_translation([0, 0.2 + radius * 0.8 * k.height, 0])
    k.add("blob", 0, blob)


CLASSES: tuple[str, ...] = tuple(LIBRARY)


# -- the scene --------------------------------------------------------------------------------------------------

def build_parts(prompt: Prompt, *, object_class: str | None = None, seed: int | None = None,
                quality: str = "medium", variation: float = 0.08) -> tuple[ObjectClass, Kit]:
    """The class's parts in its own units (not yet scaled, placed or painted)."""
    if object_class is not None:  # forced: a class name, or a noun naming a variant of one
        name = _NOUNS[object_class]
        if not object_class == name == prompt.object_class:  # "chair" forced on "a stool" stays a stool
            prompt = replace(prompt, object_class=name, noun=object_class)
    spec = LIBRARY[prompt.object_class]
    kit = Kit(prompt, np.random.default_rng([DEFAULT_SEED if seed is None else seed, 1]), quality, variation)
    spec.build(kit)
    return spec, kit


def make_scene(text: str, *, object_class: str | None = None, seed: int | None = None, quality: str = "medium",
               texture_size: int = 1024, variation: float = 0.08,
               progress: ProgressFn | None = None) -> trimesh.Scene:
    """The textured scene a prompt makes: one node per part under a root named after the class."""
    report = progress or (lambda fraction, message: None)
    prompt = read_prompt(text)
    spec, kit = build_parts(prompt, object_class=object_class, seed=seed, quality=quality, variation=variation)
    parts = _place(kit.parts, kit.prompt.scale)
    report(0.3, f"shaped {len(parts)} parts")
    appearance = appearance_of(text, spec.name)
    looks = _looks(spec, kit.colours, appearance, sorted({p.group for p in parts}))
    size = int(np.clip(texture_size, 64, MAX_TEXTURE))
    rng = np.random.default_rng([DEFAULT_SEED if seed is None else seed, 2])
    report(0.45, f"painting the texture atlas ({len(looks)} looks)")
    atlas, cells = _atlas(looks, size, rng)
    metallic, roughness = ((appearance.metallic, appearance.roughness) if appearance.material else spec.material)
    material = trimesh.visual.material.PBRMaterial(name=spec.name, baseColorTexture=atlas,
                                                   baseColorFactor=[255, 255, 255, 255],
                                                   metallicFactor=float(metallic), roughnessFactor=float(roughness))
    scene = trimesh.Scene()
    # A root node named after the class, holding the parts (trimesh does not write the base frame as a node).
    scene.graph.update(frame_to=spec.name, frame_from=scene.graph.base_frame, matrix=np.eye(4))
    report(0.65, "unwrapping the parts onto the atlas")
    lows, highs = zip(*(p.mesh.bounds for p in parts), strict=True)
    origin, extent = np.min(lows, axis=0), float(np.max(np.max(highs, axis=0) - np.min(lows, axis=0)))
    for part in parts:
        vertices, faces, normals, uv = _unwrap(part.mesh, origin, extent)
        mesh = trimesh.Trimesh(vertices, faces, vertex_normals=normals, process=False,
                               visual=trimesh.visual.TextureVisuals(uv=_into_cell(uv, cells[part.group], size),
                                                                    material=material))
        scene.add_geometry(mesh, node_name=part.name, geom_name=part.name, parent_node_name=spec.name)
    scene.metadata.update({"generator": "pocket3d built-in procedural text model", "object_class": spec.name,
                           "noun": kit.prompt.noun, "parts": [p.name for p in parts]})
    return scene


def _place(parts: list[Part], scale: float) -> list[Part]:
    """Scaled so the largest dimension is `scale`, centred over the origin, standing on y = 0."""
    lows, highs = zip(*(p.mesh.bounds for p in parts), strict=True)
    low, high = np.min(lows, axis=0), np.max(highs, axis=0)
    factor = scale / float(np.max(high - low))
    shift = -np.array([(low[0] + high[0]) / 2, low[1], (low[2] + high[2]) / 2])
    placed = []
    for part in parts:
        mesh = part.mesh.copy()
        mesh.vertices = (mesh.vertices + shift) * factor
        placed.append(Part(part.name, mesh, part.group))
    return placed


@dataclass(frozen=True)
class Look:
    colour: RGB
    pattern: str


# Which faint pattern a material word gives.
_MATERIAL_PATTERNS = {"wood": "wood", "stone": "stone", "marble": "stone", "concrete": "stone", "brick": "brick",
                      "fabric": "fabric", "leather": "fabric", "ice": "glass", "glass": "glass", "clay": "stone"}


def _looks(spec: ObjectClass, variant_colours: dict[int, RGB], appearance: Appearance,
           used: list[int]) -> dict[int, Look]:
    """Each used group's colour and pattern: the prompt's colours in turn over the groups that take them."""
    paintable = [i for i, g in enumerate(spec.groups) if not g.fixed]
    material = appearance.material
    looks = {}
    for index in used:
        group = spec.groups[index]
        if group.fixed:
            looks[index] = Look(group.colour, group.pattern)
            continue
        if appearance.colours:
            colour = appearance.colour(paintable.index(index))
        elif material:
            colour = MATERIALS[material].colour
        else:
            colour = variant_colours.get(index, group.colour)
        pattern = group.pattern
        if material:
            pattern = _MATERIAL_PATTERNS.get(material, "metal" if MATERIALS[material].metallic > 0.5 else "plain")
        looks[index] = Look(colour, pattern)
    return looks


# -- texture ----------------------------------------------------------------------------------------------------

MARGIN = 0.1  # of a cell, kept clear of UVs on every side so filtering never reaches the next swatch


def _atlas(looks: dict[int, Look], size: int,
           rng: np.random.Generator) -> tuple[Image.Image, dict[int, tuple[int, int, int]]]:
    """One square image of swatches; cells maps a group to (column, row, cell size in pixels)."""
    columns = int(np.ceil(np.sqrt(len(looks))))
    cell = max(16, size // columns // 16 * 16)  # whole JPEG blocks: a block never straddles two swatches
    pixels = np.full((size, size, 3), 128, np.uint8)
    cells = {}
    for i, (group, look) in enumerate(sorted(looks.items())):
        column, row = i % columns, i // columns
        shade = _PATTERNS.get(look.pattern, _plain)(cell, rng)
        swatch = np.clip(np.asarray(look.colour)[None, None, :] * shade[:, :, None], 0, 1)
        pixels[row * cell:(row + 1) * cell, column * cell:(column + 1) * cell] = np.round(swatch * 255)
        cells[group] = (column, row, cell)
    return _as_jpeg(Image.fromarray(pixels)), cells


def _as_jpeg(image: Image.Image) -> Image.Image:
    """The image as a JPEG, which trimesh's glTF writer keeps as JPEG: for flat swatches it is a tenth of the
    PNG's size and takes milliseconds to encode where PNG takes a few hundred."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, subsampling=0)
    jpeg = Image.open(io.BytesIO(buffer.getvalue()))
    jpeg.load()
    jpeg.encoderinfo = {"quality": 92, "subsampling": 0}  # trimesh encodes it again; Pillow >= 11 honours this
    return jpeg


def _into_cell(uv: np.ndarray, cell: tuple[int, int, int], size: int) -> np.ndarray:
    column, row, pixels = cell
    span = pixels / size
    inner = MARGIN + (1 - 2 * MARGIN) * np.clip(uv, 0, 1)
    # trimesh's v runs up the image; rows run down it
    return np.column_stack([(column + inner[:, 0]) * span, 1 - (row + 1) * span + inner[:, 1] * span])


def _smooth_noise(size: int, features: int, rng: np.random.Generator, shape: tuple[int, int] | None = None):
    coarse = rng.uniform(-1, 1, shape or (features, features)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _plain(size: int, rng: np.random.Generator) -> np.ndarray:
    return 1 + 0.03 * _smooth_noise(size, 6, rng)


def _wood(size: int, rng: np.random.Generator) -> np.ndarray:
    u = np.linspace(0, 1, size, dtype=np.float32)[None, :]
    grain = np.sin(2 * np.pi * (u * 16 + 0.5 * _smooth_noise(size, 4, rng)))
    return 1 + 0.08 * grain + 0.03 * _smooth_noise(size, 24, rng)


def _brick(size: int, rng: np.random.Generator) -> np.ndarray:
    rows, per_row = 18, 6
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    course = np.floor(y * rows)
    along = x * per_row + 0.5 * (course % 2)
    brick = rng.uniform(0.92, 1.06, (rows + 1, per_row + 2))[course.astype(int), np.floor(along).astype(int)]
    mortar = ((y * rows) % 1 < 0.1) | (along % 1 < 0.04)
    return np.where(mortar, 1.35, brick).astype(np.float32)


def _stone(size: int, rng: np.random.Generator) -> np.ndarray:
    return 1 + 0.1 * _smooth_noise(size, 8, rng) + 0.05 * _smooth_noise(size, 40, rng)


def _metal(size: int, rng: np.random.Generator) -> np.ndarray:
    streaks = _smooth_noise(size, 0, rng, shape=(size // 2, 3))  # brushed: varies across, little along
    return 1 + 0.04 * streaks + 0.03 * _smooth_noise(size, 5, rng)


def _fabric(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    weave = ((x // 2 + y // 2) % 2).astype(np.float32) * 2 - 1
    return 1 + 0.04 * weave + 0.04 * _smooth_noise(size, 10, rng)


def _foliage(size: int, rng: np.random.Generator) -> np.ndarray:
    return 1 + 0.12 * _smooth_noise(size, 20, rng) + 0.08 * _smooth_noise(size, 60, rng)


def _fur(size: int, rng: np.random.Generator) -> np.ndarray:
    return 1 + 0.08 * _smooth_noise(size, 0, rng, shape=(12, size // 3)) + 0.04 * _smooth_noise(size, 8, rng)


def _snow(size: int, rng: np.random.Generator) -> np.ndarray:
    sparkle = (rng.random((size, size)) > 0.997).astype(np.float32)
    return 0.97 + 0.03 * _smooth_noise(size, 8, rng) + 0.05 * sparkle


def _glass(size: int, rng: np.random.Generator) -> np.ndarray:
    y = np.linspace(1.08, 0.94, size, dtype=np.float32)[:, None]  # a soft sheen, lighter at the top
    return np.broadcast_to(y, (size, size)) + 0.01 * _smooth_noise(size, 4, rng)


_PATTERNS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "plain": _plain, "wood": _wood, "brick": _brick, "stone": _stone, "metal": _metal, "fabric": _fabric,
    "foliage": _foliage, "fur": _fur, "snow": _snow, "glass": _glass,
}


# -- UVs and normals --------------------------------------------------------------------------------------------

CREASE = np.radians(50)  # faces meeting at a sharper angle than this are shaded with a hard edge


def _unwrap(mesh: trimesh.Trimesh, origin: np.ndarray,
            extent: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Box projection: each face takes the two coordinates across its main normal axis, in the object's
    bounding cube, so every part has the same texel density. A vertex is split where its faces differ in axis
    or in shading normal (at a crease); (vertices, faces, normals, uv in 0..1)."""
    faces = mesh.faces
    axis = np.abs(mesh.face_normals).argmax(axis=1)
    corners = _corner_normals(mesh)
    # One int64 key a corner: vertex and axis, then the normal to 1/1000 in 11 bits a component. Corners that
    # share a vertex and its smoothing have bit-identical normals (the same sums in the same order).
    quantised = (np.round(corners * 1000).astype(np.int64) + 1000).T
    keys = (((faces.ravel().astype(np.int64) * 3 + np.repeat(axis, 3)) << 33)
            | (quantised[0] << 22) | (quantised[1] << 11) | quantised[2])
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    vertices = mesh.vertices[faces.ravel()[first]]
    along = np.repeat(axis, 3)[first]
    unit = (vertices - origin) / extent
    uv = np.where((along == 0)[:, None], unit[:, [2, 1]], np.where((along == 1)[:, None], unit[:, [0, 2]],
                                                                   unit[:, [0, 1]]))
    return vertices, inverse.reshape(-1, 3), corners[first], uv


def _corner_normals(mesh: trimesh.Trimesh) -> np.ndarray:
    """A shading normal for each face corner: the area-weighted normals of the faces around the corner's vertex
    that turn less than CREASE from this face. (n_faces * 3, 3)."""
    faces = mesh.faces
    unit = mesh.face_normals
    weighted = unit * mesh.area_faces[:, None]
    corner_vertex = faces.ravel()
    corner_face = np.repeat(np.arange(len(faces)), 3)
    order = np.argsort(corner_vertex, kind="stable")
    sorted_vertex, sorted_face = corner_vertex[order], corner_face[order]
    starts = np.searchsorted(sorted_vertex, sorted_vertex, side="left")
    counts = np.searchsorted(sorted_vertex, sorted_vertex, side="right") - starts
    # every pair of corners at one vertex
    rows = np.repeat(np.arange(len(sorted_vertex)), counts)
    cols = np.repeat(starts, counts) + np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    near = np.einsum("ij,ij->i", unit[sorted_face[rows]], unit[sorted_face[cols]]) > np.cos(CREASE)
    summed = np.column_stack([np.bincount(rows[near], weights=weighted[sorted_face[cols[near]], d],
                                          minlength=len(sorted_vertex)) for d in range(3)])
    normals = np.empty_like(summed)
    normals[order] = summed
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    fallback = unit[corner_face]
    return np.where(length > 1e-12, normals / np.maximum(length, 1e-12), fallback)
