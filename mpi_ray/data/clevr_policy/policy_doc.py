"""A policy tree as the document a model reads: general instruction, unique name, conditions.

Layout (cf. the paper's Fig. 10):
    <general instruction>

    --- Policy: L6-Surinu ---
    # Condition 1: If there is a cyan object in the image, go to Condition 1.1. Otherwise, go to Condition 1.2.
    # Condition 1.1: If one of the objects that satisfy Condition 1 is also small, the response is Case 12. Otherwise, ...
    ---
A condition with an anchor names it ("the objects that satisfy Condition 1") instead of repeating
its attributes, so following a deep branch takes several hops through the document.

-M: a chosen set of conditions shows its value as a picture of an example object instead of a word
("... has the same color as the example object <policy_image>"); the pictures are the policy images,
in the order their marks appear in the text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mpi_ray.data.clevr_policy.ontology import ATTRIBUTES
from mpi_ray.data.clevr_policy.render import render_example_crop
from mpi_ray.data.clevr_policy.scene import Kind
from mpi_ray.data.clevr_policy.tree import Condition, DecisionTree, Node, case_label
from mpi_ray.data.schema import POLICY_IMAGE_MARK

GENERAL_INSTRUCTION = (
    "You are a visual assistant that responds to images by following policies. A policy is a list of "
    "numbered conditions about the objects in an image: their shape (cube, sphere, cylinder), color "
    "(gray, red, blue, green, brown, purple, cyan, yellow), size (small, large) and material (rubber, "
    "metal). To find the response for an image, start at Condition 1, check it against the image, follow "
    "the branch it gives, and repeat until a branch gives the response. A condition that refers to another "
    "condition is about the objects that satisfy that other condition. Respond with the case exactly as "
    "written, for example Case 0."
)
IMAGE_INSTRUCTION = (
    " Some conditions show an attribute value as a picture of an example object instead of a word; such a "
    "condition is about that one attribute of the example object only."
)

_SYLLABLE_CONSONANTS = "bdfgklmnprstvz"
_SYLLABLE_VOWELS = "aeiou"


@dataclass(frozen=True)
class PolicyImage:
    """One picture in a -M policy: the condition it belongs to, the value it stands for, its object."""

    condition_id: str
    attribute: str
    value: str
    example: Kind
    png: bytes

    def describe(self) -> dict[str, object]:
        return {"condition": self.condition_id, "attribute": self.attribute, "value": self.value, "example": self.example}


@dataclass(frozen=True)
class PolicyDocument:
    name: str
    text: str
    images: tuple[PolicyImage, ...]  # in the order of POLICY_IMAGE_MARK in `text`

    def image_for(self, condition_id: str) -> PolicyImage | None:
        return next((image for image in self.images if image.condition_id == condition_id), None)


@dataclass(frozen=True)
class Policy:
    """A policy of a dataset: its id, its tree (never shown to the model) and its document."""

    policy_id: str
    tree: DecisionTree
    document: PolicyDocument

    @property
    def name(self) -> str:
        return self.document.name


def sample_policy_name(rng: random.Random, depth: int, taken: set[str]) -> str:
    """'L6-Surinu': the tree depth, then a pronounceable three-syllable word unused so far."""
    while True:
        word = "".join(rng.choice(_SYLLABLE_CONSONANTS) + rng.choice(_SYLLABLE_VOWELS) for _ in range(3))
        name = f"L{depth}-{word.capitalize()}"
        if name not in taken:
            return name


def sample_image_examples(rng: random.Random, tree: DecisionTree, fraction: float) -> dict[str, Kind]:
    """-M: which conditions show their value as a picture (each with probability `fraction`, at least
    one), and the example object of each: the condition's value, the other attributes random."""
    nodes = tree.decision_nodes()
    chosen = [node for node in nodes if rng.random() < fraction]
    if not chosen:
        chosen = [rng.choice(nodes)]
    examples: dict[str, Kind] = {}
    for node in chosen:
        assert node.condition is not None
        example = {attribute: rng.choice(values) for attribute, values in ATTRIBUTES.items()}
        example[node.condition.attribute] = node.condition.value
        examples[node.node_id] = example
    return examples


def build_policy_document(
    tree: DecisionTree, name: str, image_examples: dict[str, Kind] | None = None, crop_size: int = 64
) -> PolicyDocument:
    """The policy text (and for -M its pictures) of a tree; `image_examples` maps condition ids to
    the example object shown for them."""
    image_examples = image_examples or {}
    lines = [f"--- Policy: {name} ---"]
    images: list[PolicyImage] = []
    for node in tree.decision_nodes():
        example = image_examples.get(node.node_id)
        lines.append(f"# Condition {node.node_id}: {condition_sentence(node, pictured=example is not None)}")
        if example is not None:
            assert node.condition is not None
            png = render_example_crop(example, crop_size)
            images.append(PolicyImage(node.node_id, node.condition.attribute, node.condition.value, example, png))
    lines.append("---")
    instruction = GENERAL_INSTRUCTION + (IMAGE_INSTRUCTION if images else "")
    text = instruction + "\n\n" + "\n".join(lines)
    return PolicyDocument(name=name, text=text, images=tuple(images))


def condition_sentence(node: Node, pictured: bool = False) -> str:
    """'If <check>, <outcome if true>. Otherwise, <outcome if false>.'"""
    assert node.if_true is not None and node.if_false is not None
    return f"If {condition_check(node, pictured)}, {outcome(node.if_true)}. Otherwise, {outcome(node.if_false)}."


def condition_check(node: Node, pictured: bool = False) -> str:
    """What a condition checks, as a clause: 'there is a cyan object in the image', or
    'one of the objects that satisfy Condition 1 is also small'."""
    assert node.condition is not None
    if node.anchor_id is None:
        if pictured:
            return f"there is an object in the image that {_pictured_predicate(node.condition)}"
        return f"there is {value_noun_phrase(node.condition)} in the image"
    if pictured:
        return f"one of the objects that satisfy Condition {node.anchor_id} {_pictured_predicate(node.condition, also=True)}"
    return f"one of the objects that satisfy Condition {node.anchor_id} {value_predicate(node.condition, also=True)}"


def outcome(child: Node) -> str:
    if child.is_leaf:
        return f"the response is {case_label(child)}"
    return f"go to Condition {child.node_id}"


def value_noun_phrase(condition: Condition) -> str:
    """'a cyan object', 'a small object', 'a metal object', 'a cube'."""
    if condition.attribute == "shape":
        return f"a {condition.value}"
    return f"a {condition.value} object"


def value_predicate(condition: Condition, also: bool = False) -> str:
    """'is cyan', 'is small', 'is made of metal', 'is a cube' (with 'also' after 'is')."""
    verb = "is also" if also else "is"
    if condition.attribute == "material":
        return f"{verb} made of {condition.value}"
    if condition.attribute == "shape":
        return f"{verb} a {condition.value}"
    return f"{verb} {condition.value}"


def _pictured_predicate(condition: Condition, also: bool = False) -> str:
    """'has the same color as the example object <policy_image>' ('also has', 'is also made of ...')."""
    if condition.attribute == "material":
        verb = "is also made of" if also else "is made of"
        return f"{verb} the same material as the example object {POLICY_IMAGE_MARK}"
    verb = "also has" if also else "has"
    return f"{verb} the same {condition.attribute} as the example object {POLICY_IMAGE_MARK}"
