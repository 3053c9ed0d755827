"""Pillow-only pseudo-3D renderer for scene graphs: ground plane, soft shadows, shaded objects.

Speed comes from caching: each (shape, color, material, pixel radius) is drawn once, supersampled
and shaded, as an RGBA sprite; a scene is then a background copy, a few shadow pastes and a few
sprite pastes in painter's order. Metal is drawn with high contrast and white specular highlights,
rubber matte; large objects have twice the world radius of small ones.

Shading never lightens the middle of an object toward white: the pixel at an object's
`pixel_coords` is its CLEVR color scaled by a brightness factor, so the color reads back.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache
from typing import Callable

from PIL import Image, ImageDraw, ImageFilter

from mpi_ray.data.clevr_policy.camera import SILHOUETTE_EXTENT
from mpi_ray.data.clevr_policy.ontology import COLOR_RGB
from mpi_ray.data.clevr_policy.scene import Kind, SceneGraph, drawing_order

RGB = tuple[int, int, int]
_SUPERSAMPLE = 4
_LIGHT = (-0.42, -0.42)  # highlight direction, in object radii from the center (light from upper left)
_GROUND_FAR, _GROUND_NEAR = (158, 157, 154), (112, 112, 110)
_SHADOW_ALPHA = 95


def _scaled(rgb: RGB, factor: float) -> RGB:
    return tuple(min(255, round(channel * factor)) for channel in rgb)  # type: ignore[return-value]


def _whitened(rgb: RGB, amount: float) -> RGB:
    return tuple(round(channel + (255 - channel) * amount) for channel in rgb)  # type: ignore[return-value]


# --- shapes: each draws one object centered at (cx, cy) with radius r, in supersampled pixels ---

Drawer = Callable[[Image.Image, float, float, float, RGB, bool], None]


def _draw_sphere(canvas: Image.Image, cx: float, cy: float, r: float, base: RGB, metal: bool) -> None:
    draw = ImageDraw.Draw(canvas)
    edge, lit = (0.25, 1.0) if metal else (0.5, 0.95)
    steps = 28
    # Shrinking disks sliding toward the light point: a radial gradient from the rim to the light.
    for step in range(steps):
        t = step / steps
        radius = r * (1 - t)
        x, y = cx + _LIGHT[0] * r * t, cy + _LIGHT[1] * r * t
        factor = edge + (lit - edge) * min(1.0, t / 0.7) ** 0.8
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=_scaled(base, factor))
    # At least ~1.6 output pixels wide, so far and small metal spheres still show a white spot.
    highlight = max(0.24 * r, 1.6 * _SUPERSAMPLE) if metal else 0.3 * r
    _draw_highlight(draw, cx + _LIGHT[0] * r, cy + _LIGHT[1] * r, highlight, base, metal)


def _draw_highlight(draw: ImageDraw.ImageDraw, x: float, y: float, radius: float, base: RGB, metal: bool) -> None:
    """Metal: a hard white specular spot. Rubber: a faint, wide sheen (never near white)."""
    peak = 1.0 if metal else 0.14
    steps = 8
    for step in range(steps):
        t = step / (steps - 1)
        rad = radius * (1 - 0.55 * t)
        color = _whitened(_scaled(base, 1.0), peak * (0.35 + 0.65 * t) if metal else peak * t)
        draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=color)


def _draw_cube(canvas: Image.Image, cx: float, cy: float, r: float, base: RGB, metal: bool) -> None:
    draw = ImageDraw.Draw(canvas)
    half, dx, dy = 0.8 * r, 0.38 * r, 0.45 * r  # front-face half side; top/side face skew
    left, right, top, bottom = cx - half, cx + half, cy - half, cy + half
    top_face = [(left, top), (right, top), (right + dx, top - dy), (left + dx, top - dy)]
    side_face = [(right, top), (right + dx, top - dy), (right + dx, bottom - dy), (right, bottom)]
    if metal:
        draw.polygon(top_face, fill=_whitened(base, 0.3))
        draw.polygon(side_face, fill=_scaled(base, 0.35))
    else:
        draw.polygon(top_face, fill=_scaled(base, 1.0))
        draw.polygon(side_face, fill=_scaled(base, 0.6))
    # Front face: a gentle top-to-bottom falloff in horizontal bands.
    high, low = (0.95, 0.55) if metal else (0.85, 0.7)
    bands = 40
    for band in range(bands):
        y0 = top + 2 * half * band / bands
        factor = high + (low - high) * band / (bands - 1)
        draw.rectangle((left, y0, right, y0 + 2 * half / bands + 1), fill=_scaled(base, factor))
    if metal:
        # Specular streak along the top face and a bright top-front edge.
        streak = [(left + 0.3 * dx, top - 0.3 * dy), (left + 0.9 * half, top - 0.3 * dy),
                  (left + 0.9 * half + 0.4 * dx, top - 0.7 * dy), (left + 0.7 * dx, top - 0.7 * dy)]
        draw.polygon(streak, fill=(250, 250, 250))
        draw.line([(left, top), (right, top)], fill=_whitened(base, 0.8), width=max(1, round(0.08 * r)))


def _draw_cylinder(canvas: Image.Image, cx: float, cy: float, r: float, base: RGB, metal: bool) -> None:
    half_width, half_height = 0.85 * r, 0.8 * r
    cap = 0.3 * half_width  # vertical radius of the elliptic caps
    left, right, top, bottom = cx - half_width, cx + half_width, cy - half_height, cy + half_height
    # Body: vertical strips shaded across the width, masked to rectangle + bottom cap.
    body = Image.new("RGB", canvas.size)
    body_draw = ImageDraw.Draw(body)
    strips = 48
    lo, hi = (0.2, 1.0) if metal else (0.5, 0.92)
    peak_u = -0.45
    for strip in range(strips):
        u = -1 + (2 * strip + 1) / strips
        factor = lo + (hi - lo) * max(0.0, 1 - abs(u - peak_u) / 1.45)
        color = _scaled(base, factor)
        if metal:
            color = _whitened(color, 0.92 * math.exp(-(((u - peak_u) / 0.12) ** 2)))
        x0 = left + 2 * half_width * strip / strips
        body_draw.rectangle((x0, top, x0 + 2 * half_width / strips + 1, bottom + cap), fill=color)
    mask = Image.new("L", canvas.size, 0)
    mask_draw = ImageDraw.Draw(mask)
    mask_draw.rectangle((left, top, right, bottom), fill=255)
    mask_draw.ellipse((left, bottom - cap, right, bottom + cap), fill=255)
    canvas.paste(body, (0, 0), mask)
    draw = ImageDraw.Draw(canvas)
    cap_color = _whitened(base, 0.3) if metal else _scaled(base, 1.0)
    draw.ellipse((left, top - cap, right, top + cap), fill=cap_color)
    if metal:
        draw.ellipse((left + 0.25 * half_width, top - 0.6 * cap, cx, top - 0.05 * cap), fill=(250, 250, 250))


_DRAWERS: dict[str, Drawer] = {"sphere": _draw_sphere, "cube": _draw_cube, "cylinder": _draw_cylinder}


@lru_cache(maxsize=8192)
def object_sprite(shape: str, color: str, material: str, radius: int) -> Image.Image:
    """An RGBA sprite of one object; its center pixel is (extent, extent), extent = ceil(1.3 r)."""
    extent = math.ceil(SILHOUETTE_EXTENT * radius)
    side = (2 * extent + 1) * _SUPERSAMPLE
    base = COLOR_RGB[color]
    # Transparent pixels carry the rim color, so supersampled edges do not fringe toward black.
    canvas = Image.new("RGBA", (side, side), (*_scaled(base, 0.4), 0))
    center = (extent + 0.5) * _SUPERSAMPLE
    _DRAWERS[shape](canvas, center, center, radius * _SUPERSAMPLE, base, material == "metal")
    return canvas.reduce(_SUPERSAMPLE)


@lru_cache(maxsize=1024)
def _shadow_mask(radius: int) -> Image.Image:
    """A soft elliptic shadow under an object of this pixel radius (box: 2 extents wide)."""
    extent = math.ceil(SILHOUETTE_EXTENT * radius) + 1
    mask = Image.new("L", (2 * extent + 1, 2 * extent + 1), 0)
    center = extent + 0.5
    ImageDraw.Draw(mask).ellipse(
        (center - 1.15 * radius, center - 0.38 * radius, center + 1.15 * radius, center + 0.38 * radius),
        fill=_SHADOW_ALPHA,
    )
    return mask.filter(ImageFilter.GaussianBlur(max(0.6, 0.18 * radius)))


@lru_cache(maxsize=64)
def _background(width: int, height: int) -> Image.Image:
    """The ground plane: lighter far away (top), darker near the camera (bottom)."""
    ramp = Image.linear_gradient("L").resize((width, height))
    channels = [
        ramp.point(lambda v, far=far, near=near: round(far + (near - far) * v / 255))
        for far, near in zip(_GROUND_FAR, _GROUND_NEAR)
    ]
    return Image.merge("RGB", channels)


def render_scene(scene: SceneGraph) -> Image.Image:
    """Draw a scene graph as it says: shadows first, then objects far to near."""
    width, height = scene["image_size"]
    canvas = _background(width, height).copy()
    order = drawing_order(scene)
    objects = scene["objects"]
    for index in order:
        obj = objects[index]
        radius = obj["pixel_radius"]
        mask = _shadow_mask(radius)
        x = obj["pixel_coords"][0] + round(0.35 * radius) - mask.width // 2
        y = obj["pixel_coords"][1] + radius - mask.height // 2
        canvas.paste((0, 0, 0), (x, y, x + mask.width, y + mask.height), mask)
    for index in order:
        obj = objects[index]
        sprite = object_sprite(obj["shape"], obj["color"], obj["material"], obj["pixel_radius"])
        half = sprite.width // 2
        canvas.paste(sprite, (obj["pixel_coords"][0] - half, obj["pixel_coords"][1] - half), sprite)
    return canvas


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes; zlib level 3 encodes about twice as fast as the default 6 for ~10% larger files."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def render_png(scene: SceneGraph) -> bytes:
    return encode_png(render_scene(scene))


def example_scene(kind: Kind, side: int) -> SceneGraph:
    """One object alone in a side x side frame, at a fixed scale (so a crop shows its size too).

    A large object's radius is 0.26 of the side (the scale of a near large object in a scene whose
    height is twice the side); a small one is half that.
    """
    radius = max(2, round(side * (0.26 if kind["size"] == "large" else 0.13)))
    center_y = round(side * 0.45)
    return {"image_size": [side, side], "objects": [
        {**kind, "position": [0.0, 0.0], "pixel_coords": [side // 2, center_y], "pixel_radius": radius}
    ]}


def render_example_crop(kind: Kind, side: int) -> bytes:
    """The PNG of a policy image: a crop showing one example object of the given kind."""
    return render_png(example_scene(kind, side))
