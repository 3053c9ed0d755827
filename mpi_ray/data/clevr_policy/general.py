"""CLEVR-style attribute questions with no policy (the "general" split, for measuring forgetting).

"How many red objects are there?" -> "2"; "Is there a large metal cylinder?" -> "yes"/"no".
Existence questions alternate between a yes and a no target so both answers are common.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mpi_ray.data.clevr_policy.ontology import ATTRIBUTES, ATTRIBUTE_TYPES
from mpi_ray.data.clevr_policy.scene import Kind
from mpi_ray.data.clevr_policy.tree import Condition, pattern_holds

GENERAL_DATASET = "clevr_general"
_ADJECTIVE_ORDER = ("size", "color", "material")
_TRIES_FOR_TARGET = 50


@dataclass(frozen=True)
class GeneralQuestion:
    kind: str  # "count" | "exist"
    conditions: tuple[Condition, ...]
    question: str
    answer: str

    def describe(self) -> dict[str, object]:
        return {
            "question_type": self.kind,
            "filter": {condition.attribute: condition.value for condition in self.conditions},
        }


def sample_general_question(rng: random.Random, objects: list[Kind], kind: str, want_yes: bool = True) -> GeneralQuestion:
    """A count or existence question about 1-2 attribute values; existence aims at `want_yes`."""
    question = _ask(rng, objects, kind)
    for _ in range(_TRIES_FOR_TARGET):
        if kind == "count" or (question.answer == "yes") == want_yes:
            break
        question = _ask(rng, objects, kind)
    return question


def _ask(rng: random.Random, objects: list[Kind], kind: str) -> GeneralQuestion:
    attributes = rng.sample(ATTRIBUTE_TYPES, rng.randint(1, 2))
    conditions = tuple(
        Condition(attribute, rng.choice(ATTRIBUTES[attribute]))
        for attribute in sorted(attributes, key=ATTRIBUTE_TYPES.index)
    )
    if kind == "count":
        count = sum(pattern_holds(conditions, [obj]) for obj in objects)
        return GeneralQuestion(kind, conditions, f"How many {noun_phrase(conditions, plural=True)} are there?", str(count))
    exists = pattern_holds(conditions, objects)
    return GeneralQuestion(kind, conditions, f"Is there a {noun_phrase(conditions, plural=False)}?", "yes" if exists else "no")


def asked_values(conditions: tuple[Condition, ...], plural: bool = False) -> str:
    """" large red cubes": the question's noun phrase without "object(s)", each word with its leading
    space, the form in which the question holds each as one token."""
    words = noun_phrase(conditions, plural).split()
    if not any(condition.attribute == "shape" for condition in conditions):
        words = words[:-1]  # "object(s)": asked of every question alike
    return "".join(f" {word}" for word in words)


def echo_think(asked: str, answer: str) -> str:
    """"<think> large red cube yes</think>": the asked values (`asked_values`), then the answer at once,
    predicted at the last asked word; the boxed answer then copies it. The tiny base reads every
    attribute that way, and none when the asked word is a sentence, or even seven tokens, back
    (docs/tiny-base-log.md)."""
    return f"<think>{asked} {answer}</think>"


def noun_phrase(conditions: tuple[Condition, ...], plural: bool) -> str:
    """'large red cubes', 'metal object': adjectives in CLEVR order, then the shape or 'object'."""
    values = {condition.attribute: condition.value for condition in conditions}
    words = [values[attribute] for attribute in _ADJECTIVE_ORDER if attribute in values]
    noun = values.get("shape", "object")
    words.append(noun + "s" if plural else noun)
    return " ".join(words)
