"""The renderer draws what the scene graph says: colors at object centers, size, material, shape,
layout with only partial occlusion; and -M pictures show the attribute they stand for."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from mpi_ray.data.clevr_policy.generator import GeneratorConfig, make_policies
from mpi_ray.data.clevr_policy.ontology import COLOR_RGB, OBJECT_KINDS
from mpi_ray.data.clevr_policy.render import example_scene, object_sprite, render_example_crop, render_png, render_scene
from mpi_ray.data.clevr_policy.scene import drawing_order, sample_scene

CROP = 64
_BACKGROUND_DIFF = 6  # a pixel differs from the bare ground by more than this: object (or shadow)


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def decode(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def nearest_color(rgb: tuple[int, ...]) -> str:
    """The CLEVR color whose chromaticity (brightness removed) is closest: shading only scales it."""

    def chroma(color: tuple[int, ...]) -> tuple[float, ...]:
        total = sum(color) or 1
        return tuple(channel / total for channel in color)

    return min(COLOR_RGB, key=lambda name: sum((a - b) ** 2 for a, b in zip(chroma(rgb), chroma(COLOR_RGB[name]))))


def has_specular_white(image: Image.Image) -> bool:
    """Near-white pixels: metal's highlight; the ground, matte shading and every CLEVR color stay below."""
    return any(min(rgb) >= 225 for rgb in image.get_flattened_data())  # type: ignore[arg-type]


def row_extent(image: Image.Image, ground: Image.Image, row: int) -> tuple[int, int] | None:
    xs = [x for x in range(image.width)
          if max(abs(a - b) for a, b in zip(pixel(image, (x, row)), pixel(ground, (x, row)))) > _BACKGROUND_DIFF]
    return (xs[0], xs[-1]) if xs else None


def read_example(image: Image.Image, kind_size: str) -> dict[str, str]:
    """Read all four attributes of the one object in a policy picture from its pixels.

    Only rows above the object's center are used for the outline (its shadow lies below).
    """
    side = image.width
    center_x, center_y = example_scene({"shape": "cube", "color": "red", "size": kind_size, "material": "rubber"}, side)["objects"][0]["pixel_coords"]
    ground = render_scene({"image_size": [side, side], "objects": []})
    extent = row_extent(image, ground, center_y)
    assert extent is not None
    left, right = extent
    width = right - left + 1
    top = next(row for row in range(center_y) if row_extent(image, ground, row))
    upper = row_extent(image, ground, round(top + 0.45 * (center_y - top)))
    assert upper is not None
    asymmetry = ((right - center_x) - (center_x - left)) / width  # a cube's side face shows on the right
    upper_fill = (upper[1] - upper[0] + 1) / width  # a cylinder is full width just below its cap
    shape = "cube" if asymmetry > 0.09 else "cylinder" if upper_fill >= 0.93 else "sphere"
    return {
        "shape": shape,
        "color": nearest_color(pixel(image, (center_x, center_y))),
        "size": "large" if width > 0.35 * side else "small",
        "material": "metal" if has_specular_white(image) else "rubber",
    }


def test_every_object_kind_reads_back_from_its_picture() -> None:
    for kind in OBJECT_KINDS:
        assert read_example(decode(render_example_crop(kind, CROP)), kind["size"]) == kind


def test_m_policy_pictures_show_the_attribute_they_stand_for() -> None:
    config = GeneratorConfig(depth=6, variant="M", policies=3)
    for policy in make_policies(config):
        assert policy.document.images
        for picture in policy.document.images:
            node = policy.tree.node(picture.condition_id)
            assert node.condition is not None
            assert (picture.attribute, picture.value) == (node.condition.attribute, node.condition.value)
            assert picture.example[picture.attribute] == picture.value
            image = decode(picture.png)
            assert image.size == (config.picture_size, config.picture_size)
            assert read_example(image, picture.example["size"])[picture.attribute] == picture.value


def covered_by_nearer(scene: dict, index: int, x: int, y: int) -> bool:
    """Whether a nearer object's sprite is opaque at pixel (x, y)."""
    order = drawing_order(scene)
    for other in order[order.index(index) + 1:]:
        obj = scene["objects"][other]
        sprite = object_sprite(obj["shape"], obj["color"], obj["material"], obj["pixel_radius"])
        half = sprite.width // 2
        local = (x - obj["pixel_coords"][0] + half, y - obj["pixel_coords"][1] + half)
        if 0 <= local[0] < sprite.width and 0 <= local[1] < sprite.height and pixel(sprite, local)[3] > 0:
            return True
    return False


@pytest.mark.parametrize("size", [(128, 128), (480, 320)])
def test_center_pixel_has_the_scene_graph_color(size: tuple[int, int]) -> None:
    rng = random.Random(f"centers:{size}")
    checked = total = 0
    for _ in range(30 if size == (128, 128) else 10):
        scene = sample_scene(rng, *size)
        image = decode(render_png(scene))
        assert image.size == size
        total += len(scene["objects"])
        for index, obj in enumerate(scene["objects"]):
            x, y = obj["pixel_coords"]
            if covered_by_nearer(scene, index, x, y):
                continue
            assert nearest_color(pixel(image, (x, y))) == obj["color"], obj
            checked += 1
    assert checked >= 0.95 * total  # centers are almost never hidden


def visible_share(scene: dict, index: int) -> float:
    obj = scene["objects"][index]
    sprite = object_sprite(obj["shape"], obj["color"], obj["material"], obj["pixel_radius"])
    half = sprite.width // 2
    opaque = [(x, y) for y in range(sprite.height) for x in range(sprite.width) if pixel(sprite, (x, y))[3] >= 128]
    hidden = sum(covered_by_nearer(scene, index, obj["pixel_coords"][0] - half + x, obj["pixel_coords"][1] - half + y) for x, y in opaque)
    return 1 - hidden / len(opaque)


def test_layout_partial_occlusion_only_and_inside_frame() -> None:
    rng = random.Random("layout")
    shares = []
    for _ in range(25):
        scene = sample_scene(rng, 128, 128)
        assert 3 <= len(scene["objects"]) <= 10
        for index, obj in enumerate(scene["objects"]):
            x, y = obj["pixel_coords"]
            assert 0 <= x < 128 and 0 <= y < 128
            shares.append(visible_share(scene, index))
    assert min(shares) >= 0.45  # no heavy overlap
    assert any(share < 1.0 for share in shares)  # but occasional partial occlusion


def test_large_is_larger_and_metal_is_shiny() -> None:
    for kind in OBJECT_KINDS:
        sprite = object_sprite(kind["shape"], kind["color"], kind["material"], 20)
        assert has_specular_white(sprite.convert("RGB")) == (kind["material"] == "metal")
    rng = random.Random("sizes")
    for _ in range(20):
        for obj in sample_scene(rng, 128, 128)["objects"]:
            # Radius in pixels over world radius is the perspective scale: the same for both sizes
            # at one depth, so a large object is twice a small one where they stand.
            scale = obj["pixel_radius"] / (0.7 if obj["size"] == "large" else 0.35)
            depth_scale = 0.13 * 128 * 7 / 0.7 / (obj["position"][1] + 10)
            assert abs(scale - depth_scale) <= 0.5 / 0.35 + 1e-9


def test_rendering_is_deterministic() -> None:
    scene = sample_scene(random.Random(11), 128, 128)
    assert render_png(scene) == render_png(scene)
    assert sample_scene(random.Random(11), 128, 128) == scene
