"""The CLEVR ontology: attribute types, their values, and how each value is drawn and written."""

from __future__ import annotations

import itertools
from typing import Any, Final, Mapping

SHAPES: Final = ("cube", "sphere", "cylinder")
COLORS: Final = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
SIZES: Final = ("small", "large")
MATERIALS: Final = ("rubber", "metal")

# Attribute type -> its values; the order is the order a decision node may sample from.
ATTRIBUTES: Final[dict[str, tuple[str, ...]]] = {
    "shape": SHAPES,
    "color": COLORS,
    "size": SIZES,
    "material": MATERIALS,
}
ATTRIBUTE_TYPES: Final = tuple(ATTRIBUTES)

# CLEVR's own RGB values, so our renders read like CLEVR renders.
COLOR_RGB: Final[dict[str, tuple[int, int, int]]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
# World radius of an object (CLEVR: large 0.7, small 0.35).
SIZE_RADIUS: Final[dict[str, float]] = {"small": 0.35, "large": 0.7}

MIN_OBJECTS: Final = 3
MAX_OBJECTS: Final = 10

# Every (shape, color, size, material) an object can have: 3 * 8 * 2 * 2 = 96 kinds.
OBJECT_KINDS: Final[tuple[dict[str, str], ...]] = tuple(
    dict(zip(ATTRIBUTE_TYPES, values)) for values in itertools.product(*ATTRIBUTES.values())
)


WORD_ORDER: Final = ("size", "color", "material", "shape")  # CLEVR's: 'large cyan metal sphere'


def describe(obj: Mapping[str, Any]) -> str:
    """'large cyan metal sphere': the CLEVR word order."""
    return " ".join(str(obj[attribute]) for attribute in WORD_ORDER)
