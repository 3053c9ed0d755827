"""Landscapes to describe, re-imagine, caption or stylize: ImageDescription, TextToImage, AddText and
ImageStylization targets."""

from __future__ import annotations

import random

from mpi_ray.data.gta_policy import images
from mpi_ray.data.gta_policy.instances import Step
from mpi_ray.data.gta_policy.scenarios.draft import Draft

# scene kind -> (subject, what ImageDescription returns, keywords for TextToImage)
SCENE_TEXT = {
    "beach": ("the beach", "A sunny beach with blue sea, a yellow sun in the sky and a red umbrella on the sand.",
              "beach, blue sea, sun, red umbrella, sand"),
    "city": ("the city street", "A city skyline with tall gray buildings with lit windows above a road.",
             "city skyline, tall buildings, lit windows, road"),
    "forest": ("the forest", "A green forest of pine trees on a grassy field under a clear blue sky.",
               "forest, pine trees, grass, blue sky"),
    "mountain": ("the mountains", "Gray mountains with snowy peaks behind a green meadow.",
                 "mountains, snowy peaks, green meadow"),
    "night": ("the night sky", "A dark night sky with a full moon and stars above a dark field.",
              "night sky, full moon, stars, dark field"),
    "farm": ("the farm", "A red barn on a farm with a golden wheat field in front of it.",
             "red barn, farm, golden wheat field"),
}
VARIATIONS = (
    ("in winter with snow", "winter, snow"), ("at sunset", "sunset, orange sky"),
    ("as a watercolor painting", "watercolor painting"), ("with a rainbow in the sky", "rainbow"),
    ("in a cartoon style", "cartoon style"), ("during a thunderstorm", "thunderstorm, dark clouds, lightning"),
)
STYLIZATIONS = (
    ("Make {ref} look like a Van Gogh painting.", "make it look like a Van Gogh painting"),
    ("Turn {ref} into a pencil sketch.", "turn it into a pencil sketch"),
    ("Add fireworks to the sky in {ref}.", "add fireworks to the sky"),
    ("Make it snow in {ref}.", "make it snow"),
    ("Change the season in {ref} to autumn.", "change the season to autumn"),
    ("Make the sky in {ref} purple.", "make the sky purple"),
    ("Turn {ref} into a cyberpunk scene with neon lights.", "turn it into a cyberpunk scene with neon lights"),
)
CAPTIONS = ("Happy Birthday", "Summer Trip", "Welcome Home", "Grand Opening", "Good Morning", "Best Friends", "Sale 50% Off")
POSITIONS = (
    ("top left corner", "lt"), ("top", "mt"), ("top right corner", "rt"), ("left side", "lm"), ("center", "mm"),
    ("right side", "rm"), ("bottom left corner", "lb"), ("bottom", "mb"), ("bottom right corner", "rb"),
)
TEXT_COLORS = ("white", "yellow", "blue", "black", "green", "red")


def _scene_draft(rng: random.Random, kind: str | None = None, **fields: object) -> Draft:
    kind = kind or rng.choice(images.SCENES)
    subject, description, _ = SCENE_TEXT[kind]
    return Draft(image=images.scene_image(kind, rng), subject=subject, description=description, **fields)  # type: ignore[arg-type]


def describe_scene(rng: random.Random, name: str, kind: str | None = None) -> Draft:
    return _scene_draft(
        rng,
        kind,
        query=rng.choice(("What is shown in {ref}?", "Describe {ref} for me.", "Write a short caption for {ref}.",
                          "Where might {ref} have been taken?")),
        history=(),
        target=Step("ImageDescription", {"image": name}),
        reason="Answering needs to know what the image shows, which is what ImageDescription returns.",
    )


def generate_from_scene(rng: random.Random, name: str) -> Draft:
    kind = rng.choice(images.SCENES)
    _, description, keywords = SCENE_TEXT[kind]
    variation, extra = rng.choice(VARIATIONS)
    return _scene_draft(
        rng,
        kind,
        query=f"Generate a new image of the scene in {{ref}}, but {variation}.",
        history=(Step("ImageDescription", {"image": name}, description),),
        target=Step("TextToImage", {"keywords": f"{keywords}, {extra}"}),
        reason="The scene has been described; TextToImage generates the new image from its keywords plus the change.",
        case="chain",
    )


def add_text(rng: random.Random, name: str) -> Draft:
    caption = rng.choice(CAPTIONS)
    if rng.random() < 0.25:
        x, y = rng.randint(10, 120), rng.randint(40, 210)
        where, position = f"at the point ({x}, {y})", f"({x}, {y})"
    else:
        words, position = rng.choice(POSITIONS)
        where = f"at the {words}"
    arguments = {"image": name, "text": caption, "position": position}
    query = f"Write '{caption}' {where} of {{ref}}"
    if rng.random() < 0.6:
        arguments["color"] = rng.choice(TEXT_COLORS)
        query += f" in {arguments['color']}"
    return _scene_draft(
        rng,
        query=query + ".",
        history=(),
        target=Step("AddText", arguments),
        reason=f"Writing text on the image is what AddText does; the position {where} is written as {position!r}.",
    )


def stylize(rng: random.Random, name: str) -> Draft:
    query, instruction = rng.choice(STYLIZATIONS)
    return _scene_draft(
        rng,
        query=query,
        history=(),
        target=Step("ImageStylization", {"image": name, "instruction": instruction}),
        reason="Changing the look of the image according to an instruction is what ImageStylization does.",
    )
