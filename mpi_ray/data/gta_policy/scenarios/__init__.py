"""Synthetic GTA-style scenarios: for each target tool, a realistic query, a rendered image that fits
it, the earlier steps, and the gold arguments.

A builder (documents, formulas, objects, scenes) makes a Draft about one main image. `make_task`
then either keeps it single-image, or adds other images that the history has already described
(tip 1), or stops at the next ImageDescription of a multi-image request. Builders take an rng and
the main image's name; nothing else is random.
"""

from __future__ import annotations

import random

from mpi_ray.data.gta_policy import images
from mpi_ray.data.gta_policy.instances import Step, Task
from mpi_ray.data.gta_policy.scenarios.documents import price_arithmetic, read_document, search_about_text
from mpi_ray.data.gta_policy.scenarios.draft import Builder, Draft
from mpi_ray.data.gta_policy.scenarios.formulas import plot_formula, plot_table, read_formula, solve_formula
from mpi_ray.data.gta_policy.scenarios.objects import (
    bbox_before_region,
    count_objects,
    count_then_multiply,
    describe_region,
    draw_box,
    locate_object,
)
from mpi_ray.data.gta_policy.scenarios.scenes import SCENE_TEXT, add_text, describe_scene, generate_from_scene, stylize

SINGLE_REF = "this picture"
MULTI_IMAGE_PROBABILITY = 0.25  # a non-ImageDescription target gets other, already described images
MULTI_DESCRIBE_PROBABILITY = 0.6  # an ImageDescription target is the next image of a multi-image request

# The builders for each target key: the 14 GTA tool types ("MathOCR" = OCR on an image with math).
BUILDERS: dict[str, tuple[Builder, ...]] = {
    "OCR": (read_document,),
    "MathOCR": (read_formula,),
    "Calculator": (price_arithmetic, count_then_multiply),
    "Solver": (solve_formula,),
    "Plot": (plot_formula, plot_table),
    "CountGivenObject": (count_objects,),
    "TextToBbox": (locate_object, bbox_before_region),
    "RegionAttributeDescription": (describe_region,),
    "DrawBox": (draw_box,),
    "ImageDescription": (describe_scene,),
    "GoogleSearch": (search_about_text,),
    "TextToImage": (generate_from_scene,),
    "AddText": (add_text,),
    "ImageStylization": (stylize,),
}
TARGET_KEYS = tuple(BUILDERS)
# Multi-image requests are built over these questions.
MULTI_IMAGE_QUESTIONS: tuple[Builder, ...] = (
    read_document, price_arithmetic, count_objects, locate_object, describe_region, stylize, add_text, search_about_text,
)


def image_names(rng: random.Random, count: int) -> list[str]:
    """Distinct GTA-style names, so a model must copy the exact name (tip 3) rather than guess image_1."""
    return [f"image/image_{number}.jpg" for number in sorted(rng.sample(range(1, 1000), count))]


def _with_other_images(rng: random.Random, draft: Draft, count: int, main: int) -> list[Draft]:
    """The main draft among `count - 1` scene images whose subjects all differ, so each query is unambiguous."""
    unused = [kind for kind in images.SCENES if SCENE_TEXT[kind][0] != draft.subject]
    others = [describe_scene(rng, "", kind) for kind in rng.sample(unused, count - 1)]
    return others[:main] + [draft] + others[main:]


def _described(names: list[str], drafts: list[Draft]) -> tuple[Step, ...]:
    return tuple(Step("ImageDescription", {"image": n}, d.description) for n, d in zip(names, drafts))


def _multi_query(count: int, draft: Draft) -> str:
    return f"I have {count} pictures. " + draft.query.format(ref=f"the picture of {draft.subject}")


def make_task(target_key: str, rng: random.Random) -> Task:
    """One task whose target is `target_key`, single- or multi-image."""
    if target_key == "ImageDescription" and rng.random() < MULTI_DESCRIBE_PROBABILITY:
        return _multi_describe(rng)
    builder = rng.choice(BUILDERS[target_key])
    multi = builder in MULTI_IMAGE_QUESTIONS and rng.random() < MULTI_IMAGE_PROBABILITY
    count = rng.randint(2, 3) if multi else 1
    names = image_names(rng, count)
    main = rng.randrange(count)
    draft = builder(rng, names[main])
    if not multi:
        query = draft.query.format(ref=SINGLE_REF)
        return Task(draft.case, (draft.image,), tuple(names), query, draft.history, draft.target, draft.reason, draft.tips)
    drafts = _with_other_images(rng, draft, count, main)
    reason = f"Every image has been described (tip 1), and {draft.subject} is {names[main]}. {draft.reason}"
    return Task("multi-image-followup", tuple(d.image for d in drafts), tuple(names), _multi_query(count, draft),
                _described(names, drafts) + draft.history, draft.target, reason, draft.tips)


def _multi_describe(rng: random.Random) -> Task:
    """A multi-image request where the next step describes the first image not yet described (tip 1)."""
    count = rng.randint(2, 3)
    names = image_names(rng, count)
    main = rng.randrange(count)
    drafts = _with_other_images(rng, rng.choice(MULTI_IMAGE_QUESTIONS)(rng, names[main]), count, main)
    done = rng.randrange(count)
    reason = (
        f"There are {count} images and {done} of them have been described; before any other tool, "
        f"the next image not yet described, {names[done]}, must be described with ImageDescription."
    )
    return Task("multi-image-describe", tuple(d.image for d in drafts), tuple(names), _multi_query(count, drafts[main]),
                _described(names[:done], drafts[:done]), Step("ImageDescription", {"image": names[done]}), reason)
