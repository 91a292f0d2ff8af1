"""Colour and material words of a prompt, as the text-reading built-in models see them."""

from __future__ import annotations

import pytest

from pocket3d.models.builtin.words import COLOURS, MATERIALS, parse_appearance


def test_colours_in_order_and_the_material() -> None:
    found = parse_appearance("A red wooden chair with GOLD legs")
    assert found.colours == (COLOURS["red"], COLOURS["gold"])
    assert found.material == "wood" and found.roughness == MATERIALS["wood"].roughness
    assert found.colour(0) == COLOURS["red"] and found.colour(1) == COLOURS["gold"] and found.colour(2) == COLOURS["red"]


@pytest.mark.parametrize("prompt,material", [("a gold ring", "gold"), ("a chrome robot", "chrome"),
                                             ("a gold and black chair", None), ("steel sword", "steel")])
def test_metal_words(prompt: str, material: str | None) -> None:
    found = parse_appearance(prompt)
    assert found.material == material
    assert found.metallic == (1.0 if material else 0.0)


def test_without_colour_words_the_material_colours_it() -> None:
    assert parse_appearance("a marble statue").base_colour == MATERIALS["marble"].colour
    assert parse_appearance("a zorblax").base_colour == (0.72, 0.72, 0.72)
    assert parse_appearance(None).colours == ()


def test_shades() -> None:
    light, dark = parse_appearance("light blue").colours[0], parse_appearance("dark blue").colours[0]
    assert all(lc > c > dc for lc, c, dc in zip(light, COLOURS["blue"], dark, strict=True))
