"""Toys on a table, countable and locatable, for CountGivenObject, TextToBbox, RegionAttributeDescription
(tip 2) and DrawBox targets."""

from __future__ import annotations

import random
from dataclasses import dataclass

from mpi_ray.data.gta_policy import images
from mpi_ray.data.gta_policy.images import PlacedObject
from mpi_ray.data.gta_policy.instances import Step
from mpi_ray.data.gta_policy.rules import TIP_BBOX_FIRST
from mpi_ray.data.gta_policy.scenarios.draft import Draft, bbox_result, bbox_text, plural, tidy

OBJECT_COLORS = ("red", "blue", "green", "yellow", "purple", "orange")
SHAPED_KINDS = ("ball", "box", "cone", "star")  # kinds whose shape is a fair question

_TOYS = "Toys on a table: colored balls, boxes, cones, stars, toy cars and toy houses."


@dataclass(frozen=True)
class ObjectScene:
    objects: tuple[PlacedObject, ...]
    target: PlacedObject  # one of the `repeats` objects of the asked (color, kind)
    image: bytes

    @property
    def what(self) -> str:
        return f"{self.target.color} {self.target.kind}"


def _object_scene(rng: random.Random, repeats: int = 1) -> ObjectScene:
    """Objects on a table: `repeats` copies of one (color, kind) and distractors that differ from it."""
    kind, color = rng.choice(images.OBJECT_KINDS), rng.choice(OBJECT_COLORS)
    boxes = images.place_boxes(repeats + rng.randint(2, 5), rng)
    objects = [PlacedObject(kind, color, box) for box in boxes[:repeats]]
    for box in boxes[repeats:]:
        other = (kind, color)
        while other == (kind, color):
            other = (rng.choice(images.OBJECT_KINDS), rng.choice(OBJECT_COLORS))
        objects.append(PlacedObject(*other, box))
    rng.shuffle(objects)
    target = next(o for o in objects if (o.kind, o.color) == (kind, color))
    return ObjectScene(tuple(objects), target, images.objects_image(objects))


def _toys_draft(scene: ObjectScene, **fields: object) -> Draft:
    return Draft(image=scene.image, subject="the toys", description=_TOYS, **fields)  # type: ignore[arg-type]


def count_objects(rng: random.Random, name: str) -> Draft:
    scene = _object_scene(rng, repeats=rng.randint(1, 6))
    many = plural(scene.what)
    return _toys_draft(
        scene,
        query=rng.choice((f"How many {many} are there in {{ref}}?", f"Count the {many} in {{ref}}.")),
        history=(),
        target=Step("CountGivenObject", {"image": name, "text": scene.what}),
        reason=f"Counting the {many} is what CountGivenObject does, with the object description as text.",
    )


def count_then_multiply(rng: random.Random, name: str) -> Draft:
    count = rng.randint(2, 6)
    scene = _object_scene(rng, repeats=count)
    price = rng.choice((0.5, 1.25, 2, 2.5, 3.75, 4))
    return _toys_draft(
        scene,
        query=f"Each {scene.what} in {{ref}} costs ${tidy(price)}. How much do all the {plural(scene.what)} cost together?",
        history=(Step("CountGivenObject", {"image": name, "text": scene.what}, str(count)),),
        target=Step("Calculator", {"expression": f"{count} * {tidy(price)}"}),
        reason=f"CountGivenObject found {count}; the cost is count times price, one expression for the Calculator.",
        case="chain",
    )


def locate_object(rng: random.Random, name: str) -> Draft:
    if rng.random() < 0.3:
        scene = _object_scene(rng, repeats=rng.randint(2, 4))
        return _toys_draft(
            scene,
            query=f"Find all the {plural(scene.what)} in {{ref}} and give their locations.",
            history=(),
            target=Step("TextToBbox", {"image": name, "text": scene.what, "top1": False}),
            reason="Every matching object is wanted, so TextToBbox is called with top1 false to return all boxes.",
        )
    scene = _object_scene(rng)
    return _toys_draft(
        scene,
        query=rng.choice((f"Where is the {scene.what} in {{ref}}?", f"Draw a box around the {scene.what} in {{ref}}.",
                          f"Give me the coordinates of the {scene.what} in {{ref}}.")),
        history=(),
        target=Step("TextToBbox", {"image": name, "text": scene.what, "top1": True}),
        reason=f"The {scene.what} must be located first, with TextToBbox; one object is wanted, so top1 is true.",
    )


def _region_question(rng: random.Random) -> tuple[ObjectScene, str, str, str]:
    """A scene, a question about one object's attribute, how to find the object, and the attribute.

    The object must be the only one its description fits, so the bbox of the answer is unambiguous.
    """
    for _ in range(100):
        scene = _object_scene(rng)
        target = scene.target
        if rng.random() < 0.6:
            if sum(o.kind == target.kind for o in scene.objects) == 1:
                query = rng.choice((f"What color is the {target.kind} in {{ref}}?",
                                    f"Tell me the color of the {target.kind} in {{ref}}."))
                return scene, query, target.kind, "color"
        elif target.kind in SHAPED_KINDS and sum(o.color == target.color for o in scene.objects) == 1:
            return scene, f"What shape is the {target.color} object in {{ref}}?", f"{target.color} object", "shape"
    raise RuntimeError("could not place an object that only one description fits")


def describe_region(rng: random.Random, name: str) -> Draft:
    scene, query, text, attribute = _region_question(rng)
    box = scene.target.box
    return _toys_draft(
        scene,
        query=query,
        history=(Step("TextToBbox", {"image": name, "text": text, "top1": True}, bbox_result(box, rng)),),
        target=Step("RegionAttributeDescription", {"image": name, "bbox": bbox_text(box), "attribute": attribute}),
        reason=f"TextToBbox has located the {text}; its {attribute} is an attribute of that region, "
        "so RegionAttributeDescription is called with the returned bbox.",
        case="region-after-bbox",
    )


def bbox_before_region(rng: random.Random, name: str) -> Draft:
    scene, query, text, attribute = _region_question(rng)
    return _toys_draft(
        scene,
        query=query,
        history=(),
        target=Step("TextToBbox", {"image": name, "text": text, "top1": True}),
        reason=f"The question is about the {attribute} of one region, but no bbox is known yet; "
        "the region must first be located with TextToBbox.",
        case="bbox-before-region",
        tips=(TIP_BBOX_FIRST,),
    )


def draw_box(rng: random.Random, name: str) -> Draft:
    scene = _object_scene(rng)
    arguments = {"image": name, "bbox": bbox_text(scene.target.box)}
    query = f"Draw a box around the {scene.what} in {{ref}}."
    if rng.random() < 0.5:
        arguments["annotation"] = rng.choice(("target", "found it", scene.target.kind, "this one"))
        query = f"Draw a box around the {scene.what} in {{ref}} and label it '{arguments['annotation']}'."
    located = Step("TextToBbox", {"image": name, "text": scene.what, "top1": True}, bbox_result(scene.target.box, rng))
    return _toys_draft(
        scene,
        query=query,
        history=(located,),
        target=Step("DrawBox", arguments),
        reason="TextToBbox has returned the box; DrawBox draws it" + (" with the label." if "annotation" in arguments else "."),
        case="chain",
    )
