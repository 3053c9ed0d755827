"""Chain-of-thought targets written from the gold path (a "forward CoT" that is right by construction).

For each visited condition the reasoning recalls it by its ID and what it checks (for a pictured
value, also what the picture shows), names the objects in the image that decide it, and branches:

    <think>I follow Policy L6-Surinu, starting at Condition 1.
    Condition 1 checks whether there is a cyan object in the image. Yes: the cyan object at the front
    left. So I go to Condition 1.1.
    Condition 1.1 checks whether one of the objects that satisfy Condition 1 is also a cube. No: the
    objects that satisfy Condition 1 are the cyan object at the front left, and none of them is a
    cube. So the response is Case 12.</think>

The evidence names an object only by the attributes checked so far on its path (and where it
stands), never by ones a later condition asks about: with the whole description ("the small cyan
rubber sphere") a later decision can be copied from the text instead of read from the image (on the
tiny default with a freshly topped-up tower, that copy is what CoT-SFT learned; docs/tiny-base-log.md,
"A tower that reads the conjunction"). It also makes the CoT shorter.

The stage code appends the boxed answer; a non-CoT target is the boxed answer alone.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mpi_ray.data.clevr_policy.ontology import WORD_ORDER, describe
from mpi_ray.data.clevr_policy.policy_doc import PolicyDocument, condition_check, outcome, value_predicate
from mpi_ray.data.clevr_policy.tree import Decision, DecisionTree, Node, Pattern, pattern_holds

SceneObject = Mapping[str, Any]  # a scene-graph object: attributes and "position"
_MAX_LISTED = 4  # objects named as evidence before "and N more"
_PLURAL = {"shape": "shapes", "color": "colors", "size": "sizes", "material": "materials"}


def cot_target(tree: DecisionTree, decision: Decision, objects: Sequence[SceneObject], document: PolicyDocument) -> str:
    """'<think>...</think>' for the scene whose gold path is `decision`."""
    lines = [f"I follow Policy {document.name}, starting at Condition 1."]
    for step in decision.steps:
        node = tree.node(step.node_id)
        lines.append(_step_text(node, step.holds, objects, document))
    return "<think>" + "\n".join(lines) + "</think>"


def _step_text(node: Node, holds: bool, objects: Sequence[SceneObject], document: PolicyDocument) -> str:
    assert node.condition is not None and node.if_true is not None and node.if_false is not None
    picture = document.image_for(node.node_id)
    recall = f"Condition {node.node_id} checks whether {condition_check(node, pictured=False)}."
    if picture is not None:
        recall = (
            f"Condition {node.node_id} shows an example object, a {describe(picture.example)}; it checks its "
            f"{picture.attribute}, {picture.value}, so it checks whether {condition_check(node, pictured=False)}."
        )
    evidence = _evidence(node, holds, objects)
    child = node.if_true if holds else node.if_false
    branch = outcome(child) if child.is_leaf else f"I {outcome(child)}"
    return f"{recall} {evidence} So {branch}."


def _evidence(node: Node, holds: bool, objects: Sequence[SceneObject]) -> str:
    """Which objects decide the condition: the witnesses if it holds, else the candidates that fail."""
    assert node.condition is not None
    if holds:
        witnesses = [obj for obj in objects if pattern_holds(node.pattern, [obj])]
        return f"Yes: {_object_list(witnesses, node.pattern)}."
    if node.anchor_id is None:
        present = sorted({str(obj[node.condition.attribute]) for obj in objects})
        return (
            f"No: the {_PLURAL[node.condition.attribute]} in the image are {_join(present)}, "
            f"so no object {value_predicate(node.condition)}."
        )
    candidates = [obj for obj in objects if pattern_holds(node.context, [obj])]
    return (
        f"No: the objects that satisfy Condition {node.anchor_id} are {_object_list(candidates, node.context)}, "
        f"and none of them {value_predicate(node.condition)}."
    )


def _object_list(objects: Sequence[SceneObject], checked: Pattern) -> str:
    """'the cyan cube at the front left and the ...' (left to right, at most 4 named), each object
    named by the `checked` attributes only."""
    ordered = sorted(objects, key=lambda obj: (obj["position"][0], obj["position"][1]))
    named = [f"the {_checked_phrase(obj, checked)} {location(obj)}" for obj in ordered[:_MAX_LISTED]]
    if len(ordered) > _MAX_LISTED:
        named.append(f"{len(ordered) - _MAX_LISTED} more")
    return _join(named)


def _checked_phrase(obj: SceneObject, checked: Pattern) -> str:
    """An object by the checked attributes, in CLEVR's word order: 'large cyan object', 'metal cube'."""
    attributes = {condition.attribute for condition in checked}
    words = [str(obj[attribute]) for attribute in WORD_ORDER if attribute in attributes]
    return " ".join(words if "shape" in attributes else [*words, "object"])


def location(obj: SceneObject) -> str:
    """Where an object stands, in words: 'at the front left', 'at the back', 'in the middle'."""
    x, y = obj["position"]
    side = "left" if x < -1 else "right" if x > 1 else ""
    depth = "front" if y < -1 else "back" if y > 1 else ""
    if depth and side:
        return f"at the {depth} {side}"
    if depth:
        return f"at the {depth}"
    if side:
        return f"on the {side}"
    return "in the middle"


def attribute_summary(objects: Sequence[Any]) -> str:
    """What is present, per attribute type, in the words of the runs' CoT evidence ("the colors in
    the image are blue, brown and red"): a set per attribute, readable from the sum of the objects.
    The base pretrains on it; CoT-SFT's general replay rows reuse it."""
    parts = [f"the {plural} in the image are {_join(sorted({str(obj[attribute]) for obj in objects}))}"
             for attribute, plural in _PLURAL.items()]
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
