"""Small local Pillow renderings that fit the synthetic queries: text cards, formulas, objects, scenes.

Every function is deterministic for its arguments (randomness comes in as an explicit rng) and
returns PNG bytes, the image encoding of the sample schema.
"""

from __future__ import annotations

import functools
import io
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

SIZE = 224
Box = tuple[int, int, int, int]  # (x1, y1, x2, y2) in pixels

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "blue": (40, 90, 214),
    "green": (46, 160, 67),
    "yellow": (240, 200, 30),
    "purple": (130, 60, 180),
    "orange": (245, 130, 30),
    "black": (30, 30, 30),
    "white": (250, 250, 250),
}
OBJECT_KINDS = ("ball", "box", "cone", "star", "car", "house")


@dataclass(frozen=True)
class PlacedObject:
    kind: str  # one of OBJECT_KINDS
    color: str  # a key of COLORS
    box: Box


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def reencode_png(data: bytes) -> bytes:
    """Any image file Pillow reads -> PNG bytes at the same resolution (bboxes stay valid)."""
    with Image.open(io.BytesIO(data)) as image:
        return to_png(image.convert("RGB"))


def text_card(lines: list[str], background: str = "white", ink: str = "black", size: int = 15) -> bytes:
    """A sign, receipt, menu or page: lines of text on a plain card with a border."""
    image = Image.new("RGB", (SIZE, SIZE), COLORS.get(background, background))
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, 4, SIZE - 5, SIZE - 5), outline=COLORS.get(ink, ink), width=2)
    line_height = size + 5
    top = max(10, (SIZE - line_height * len(lines)) // 2)
    for index, line in enumerate(lines):
        draw.text((12, top + index * line_height), line, fill=COLORS.get(ink, ink), font=font(size))
    return to_png(image)


def formula_card(formulas: list[str]) -> bytes:
    """Math written on a worksheet: one formula per line, larger type, ruled paper."""
    image = Image.new("RGB", (SIZE, SIZE), (252, 252, 240))
    draw = ImageDraw.Draw(image)
    for y in range(24, SIZE, 28):
        draw.line((0, y, SIZE, y), fill=(200, 215, 235), width=1)
    for index, formula in enumerate(formulas):
        draw.text((14, 40 + index * 48), formula, fill=(20, 20, 90), font=font(20))
    return to_png(image)


def place_boxes(count: int, rng: random.Random, cell: int = 56) -> list[Box]:
    """`count` non-overlapping boxes on a jittered grid (at most 16 fit a 224 image)."""
    cells = [(col, row) for row in range(SIZE // cell) for col in range(SIZE // cell)]
    chosen = rng.sample(cells, min(count, len(cells)))
    boxes = []
    for col, row in chosen:
        side = rng.randint(cell // 2, cell - 8)
        x = col * cell + rng.randint(2, cell - side - 2)
        y = row * cell + rng.randint(2, cell - side - 2)
        boxes.append((x, y, x + side, y + side))
    return boxes


def _draw_object(draw: ImageDraw.ImageDraw, placed: PlacedObject) -> None:
    x1, y1, x2, y2 = placed.box
    fill = COLORS[placed.color]
    w, h = x2 - x1, y2 - y1
    if placed.kind == "ball":
        draw.ellipse(placed.box, fill=fill, outline="black")
    elif placed.kind == "box":
        draw.rectangle(placed.box, fill=fill, outline="black")
    elif placed.kind == "cone":
        draw.polygon([(x1 + w // 2, y1), (x2, y2), (x1, y2)], fill=fill, outline="black")
    elif placed.kind == "star":
        cx, cy = x1 + w / 2, y1 + h / 2
        radii = [w / 2 if i % 2 == 0 else w / 5 for i in range(10)]
        angles = [math.pi / 2 + i * math.pi / 5 for i in range(10)]
        points = [(cx + r * math.cos(a), cy - r * math.sin(a)) for r, a in zip(radii, angles)]
        draw.polygon(points, fill=fill, outline="black")
    elif placed.kind == "car":
        draw.rectangle((x1, y1 + h // 3, x2, y2 - h // 5), fill=fill, outline="black")
        draw.rectangle((x1 + w // 4, y1 + h // 8, x2 - w // 4, y1 + h // 3), fill=fill, outline="black")
        for cx in (x1 + w // 4, x2 - w // 4):
            draw.ellipse((cx - h // 7, y2 - h // 3, cx + h // 7, y2), fill="black")
    elif placed.kind == "house":
        draw.rectangle((x1, y1 + h // 2, x2, y2), fill=fill, outline="black")
        draw.polygon([(x1, y1 + h // 2), (x1 + w // 2, y1), (x2, y1 + h // 2)], fill=(120, 60, 40), outline="black")
    else:
        raise ValueError(f"unknown object kind {placed.kind!r}")


def objects_image(objects: list[PlacedObject], background: tuple[int, int, int] = (235, 235, 228)) -> bytes:
    """Countable, locatable objects with a color attribute on a plain table top."""
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    for placed in objects:
        _draw_object(draw, placed)
    return to_png(image)


def scene_image(scene: str, rng: random.Random) -> bytes:
    """A simple landscape to describe or stylize; `scene` is one of SCENES."""
    image = Image.new("RGB", (SIZE, SIZE), (135, 200, 240))
    draw = ImageDraw.Draw(image)
    horizon = rng.randint(120, 150)
    _SCENES[scene](draw, rng, horizon)
    return to_png(image)


def _beach(draw: ImageDraw.ImageDraw, rng: random.Random, horizon: int) -> None:
    draw.rectangle((0, horizon, SIZE, horizon + 40), fill=(30, 110, 190))
    draw.rectangle((0, horizon + 40, SIZE, SIZE), fill=(235, 210, 150))
    sun_x = rng.randint(30, 190)
    draw.ellipse((sun_x - 18, 20, sun_x + 18, 56), fill=(250, 220, 60))
    umbrella_x = rng.randint(40, 180)
    draw.pieslice((umbrella_x - 30, horizon + 30, umbrella_x + 30, horizon + 80), 180, 360, fill=(220, 50, 50))
    draw.line((umbrella_x, horizon + 55, umbrella_x, horizon + 85), fill="black", width=3)


def _city(draw: ImageDraw.ImageDraw, rng: random.Random, horizon: int) -> None:
    draw.rectangle((0, horizon + 40, SIZE, SIZE), fill=(90, 90, 95))
    x = 0
    while x < SIZE:
        width, height = rng.randint(28, 48), rng.randint(60, 150)
        draw.rectangle((x, horizon + 40 - height, x + width, horizon + 40), fill=(110, 110, 130), outline="black")
        for wy in range(horizon + 48 - height, horizon + 32, 14):
            draw.rectangle((x + 6, wy, x + 12, wy + 6), fill=(250, 240, 150))
        x += width + rng.randint(2, 8)


def _forest(draw: ImageDraw.ImageDraw, rng: random.Random, horizon: int) -> None:
    draw.rectangle((0, horizon, SIZE, SIZE), fill=(70, 140, 60))
    for _ in range(rng.randint(5, 9)):
        x, base = rng.randint(10, 214), rng.randint(horizon + 10, SIZE - 5)
        draw.rectangle((x - 3, base - 15, x + 3, base), fill=(100, 60, 30))
        draw.polygon([(x, base - 70), (x + 22, base - 15), (x - 22, base - 15)], fill=(20, 100, 40))


def _mountain(draw: ImageDraw.ImageDraw, rng: random.Random, horizon: int) -> None:
    draw.rectangle((0, horizon, SIZE, SIZE), fill=(110, 160, 90))
    for _ in range(3):
        peak_x, peak_y, half = rng.randint(20, 200), rng.randint(30, 70), rng.randint(60, 100)
        draw.polygon([(peak_x, peak_y), (peak_x + half, horizon), (peak_x - half, horizon)], fill=(120, 120, 130))
        draw.polygon([(peak_x, peak_y), (peak_x + 15, peak_y + 20), (peak_x - 15, peak_y + 20)], fill="white")


def _night(draw: ImageDraw.ImageDraw, rng: random.Random, horizon: int) -> None:
    draw.rectangle((0, 0, SIZE, horizon), fill=(15, 20, 60))
    draw.rectangle((0, horizon, SIZE, SIZE), fill=(30, 40, 30))
    for _ in range(25):
        x, y = rng.randint(0, SIZE), rng.randint(0, horizon - 10)
        draw.point((x, y), fill="white")
    moon_x = rng.randint(30, 190)
    draw.ellipse((moon_x - 15, 25, moon_x + 15, 55), fill=(245, 245, 210))


def _farm(draw: ImageDraw.ImageDraw, rng: random.Random, horizon: int) -> None:
    draw.rectangle((0, horizon, SIZE, SIZE), fill=(200, 180, 80))
    barn_x = rng.randint(20, 120)
    draw.rectangle((barn_x, horizon - 50, barn_x + 70, horizon + 10), fill=(180, 40, 40), outline="black")
    draw.polygon([(barn_x - 5, horizon - 50), (barn_x + 35, horizon - 85), (barn_x + 75, horizon - 50)], fill=(120, 30, 30))
    for row in range(horizon + 20, SIZE, 12):
        draw.line((0, row, SIZE, row), fill=(170, 150, 60), width=2)


_SCENES = {"beach": _beach, "city": _city, "forest": _forest, "mountain": _mountain, "night": _night, "farm": _farm}
SCENES = tuple(_SCENES)
