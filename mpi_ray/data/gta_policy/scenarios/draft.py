"""What every scenario builder returns, and small formatting helpers the builders share."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from mpi_ray.data.gta_policy import images
from mpi_ray.data.gta_policy.instances import Step


@dataclass(frozen=True)
class Draft:
    image: bytes
    subject: str  # how a multi-image query names the image: "the receipt"
    description: str  # what ImageDescription returns for it
    query: str  # the user query; "{ref}" is where the image is named
    history: tuple[Step, ...]
    target: Step
    reason: str
    case: str = "single"
    tips: tuple[str, ...] = ()


Builder = Callable[[random.Random, str], Draft]


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith("x") else "s")


def money(value: float) -> str:
    return f"{value:.2f}"


def tidy(value: float) -> str:
    """A price as a person writes it in an expression: 4.5, 2.75, 8."""
    return f"{value:g}"


def bbox_text(box: images.Box) -> str:
    return f"({box[0]}, {box[1]}, {box[2]}, {box[3]})"


def bbox_result(box: images.Box, rng: random.Random) -> str:
    """What TextToBbox returns, GTA style: the box and a detection score."""
    return f"{bbox_text(box)}, score {rng.uniform(0.8, 0.97):.2f}"
