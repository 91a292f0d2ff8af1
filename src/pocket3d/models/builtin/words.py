"""What a prompt says about looks: colour words and material words, for the built-in models that read text.

A word list, not a language model: "a red wooden chair with gold legs" gives the colours red and gold, in that
order, and the material wood. Unknown words are ignored; with no colour word the material's own colour is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RGB = tuple[float, float, float]

# sRGB in 0..1 (what glTF base colour textures hold); names as people write them, a few spellings each.
COLOURS: dict[str, RGB] = {
    "red": (0.80, 0.10, 0.10), "crimson": (0.66, 0.05, 0.17), "scarlet": (0.90, 0.15, 0.05),
    "maroon": (0.45, 0.05, 0.08), "pink": (0.95, 0.55, 0.70), "magenta": (0.85, 0.10, 0.65),
    "purple": (0.45, 0.15, 0.60), "violet": (0.55, 0.30, 0.80), "lavender": (0.72, 0.62, 0.88),
    "blue": (0.12, 0.30, 0.80), "navy": (0.06, 0.10, 0.35), "cyan": (0.10, 0.75, 0.85),
    "teal": (0.05, 0.50, 0.50), "turquoise": (0.20, 0.80, 0.75), "green": (0.15, 0.60, 0.20),
    "lime": (0.55, 0.85, 0.15), "olive": (0.45, 0.45, 0.12), "yellow": (0.95, 0.85, 0.15),
    "gold": (0.90, 0.70, 0.20), "golden": (0.90, 0.70, 0.20), "orange": (0.95, 0.50, 0.10),
    "brown": (0.45, 0.28, 0.14), "tan": (0.78, 0.65, 0.45), "beige": (0.87, 0.80, 0.65),
    "white": (0.93, 0.93, 0.93), "ivory": (0.95, 0.93, 0.84), "black": (0.05, 0.05, 0.05),
    "grey": (0.50, 0.50, 0.50), "gray": (0.50, 0.50, 0.50), "silver": (0.75, 0.75, 0.78),
    "bronze": (0.70, 0.45, 0.20), "copper": (0.72, 0.40, 0.22),
}
_SHADES = {"light": 0.45, "pale": 0.55, "dark": -0.5, "deep": -0.35, "bright": 0.15}


@dataclass(frozen=True)
class Material:
    colour: RGB  # when the prompt names no colour
    metallic: float
    roughness: float


MATERIALS: dict[str, Material] = {
    "wood": Material((0.55, 0.36, 0.20), 0.0, 0.8),
    "stone": Material((0.55, 0.54, 0.50), 0.0, 0.95),
    "marble": Material((0.90, 0.89, 0.86), 0.0, 0.3),
    "metal": Material((0.70, 0.70, 0.72), 1.0, 0.35),
    "steel": Material((0.62, 0.63, 0.66), 1.0, 0.3),
    "iron": Material((0.42, 0.42, 0.44), 1.0, 0.55),
    "chrome": Material((0.85, 0.85, 0.88), 1.0, 0.08),
    "gold": Material((0.90, 0.70, 0.20), 1.0, 0.25),
    "silver": Material((0.75, 0.75, 0.78), 1.0, 0.2),
    "bronze": Material((0.70, 0.45, 0.20), 1.0, 0.4),
    "copper": Material((0.72, 0.40, 0.22), 1.0, 0.35),
    "plastic": Material((0.80, 0.80, 0.80), 0.0, 0.45),
    "rubber": Material((0.12, 0.12, 0.12), 0.0, 0.9),
    "glass": Material((0.80, 0.90, 0.95), 0.0, 0.05),
    "ceramic": Material((0.92, 0.90, 0.86), 0.0, 0.25),
    "porcelain": Material((0.95, 0.95, 0.97), 0.0, 0.2),
    "clay": Material((0.70, 0.42, 0.28), 0.0, 0.9),
    "leather": Material((0.40, 0.24, 0.12), 0.0, 0.7),
    "fabric": Material((0.60, 0.60, 0.65), 0.0, 0.95),
    "concrete": Material((0.60, 0.60, 0.58), 0.0, 0.95),
    "brick": Material((0.62, 0.25, 0.18), 0.0, 0.9),
    "ice": Material((0.80, 0.92, 0.98), 0.0, 0.1),
}
# Adjectives and plurals people use for the same materials.
_MATERIAL_WORDS = {
    "wooden": "wood", "oak": "wood", "pine": "wood", "timber": "wood", "stony": "stone", "rock": "stone",
    "metallic": "metal", "metal": "metal", "steely": "steel", "plastic": "plastic",
    "glassy": "glass", "crystal": "glass", "clay": "clay", "terracotta": "clay", "cloth": "fabric",
    "woolen": "fabric", "wool": "fabric", "cotton": "fabric", "velvet": "fabric", "leathery": "leather",
    "icy": "ice", "bricks": "brick",
}


@dataclass(frozen=True)
class Appearance:
    colours: tuple[RGB, ...]  # the colours named, in the order written; empty when none is
    material: str | None  # the first material named (a key of MATERIALS)
    metallic: float
    roughness: float

    @property
    def base_colour(self) -> RGB:
        """The first colour named, else the material's own, else a neutral light grey."""
        if self.colours:
            return self.colours[0]
        if self.material:
            return MATERIALS[self.material].colour
        return (0.72, 0.72, 0.72)

    def colour(self, i: int) -> RGB:
        """The i-th colour for the i-th part of an object, cycling through those named."""
        if not self.colours:
            return self.base_colour
        return self.colours[i % len(self.colours)]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def parse_appearance(text: str | None) -> Appearance:
    tokens = words(text or "")
    colours: list[RGB] = []
    material: str | None = None
    # "gold" or "silver" is the metal when it is the only colour word ("a gold ring"), and just a colour among
    # others ("a red and gold crown")
    colour_words = sum(t in COLOURS for t in tokens)
    for i, word in enumerate(tokens):
        name = _MATERIAL_WORDS.get(word, word if word in MATERIALS else None)
        if name is not None and material is None and (word not in COLOURS or colour_words == 1):
            material = name
        if word in COLOURS:
            rgb = COLOURS[word]
            shade = _SHADES.get(tokens[i - 1]) if i > 0 else None
            if shade is not None:
                rgb = tuple(c + (1 - c) * shade if shade > 0 else c * (1 + shade) for c in rgb)
            colours.append(rgb)
    found = MATERIALS.get(material) if material else None
    return Appearance(tuple(colours), material, found.metallic if found else 0.0,
                      found.roughness if found else 0.8)
