"""Pretraining data for the tiny base (our stand-in for an Instruct model that can see and read).

An endless, seeded stream of records in the one sample schema, generated on the fly:

- perception: a CLEVR question (count or existence, 1-2 attributes) answered after a <think> that
  names every object left to right, or asked for a direct yes/no (what the perception probe asks);
- in-context policy following: a random policy of depth 2-3 in the prompt, the scene, the
  project's CoT (the same format as the runs' CoT targets) and the boxed case.

Disjoint from the runs: base policy names have four syllables (run names three), so no run's policy
name occurs here; a sampled tree whose conditions equal a tree of any run with data.seed 0-9 (up to
10 policies of the same depth) is redrawn (there are only 15 depth-1 trees, so the base has none); every stream is keyed "clevr_base:<seed>:..." (runs key theirs
"clevr_policy:...").
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

from mpi_ray.data.clevr_policy.cot import _join, attribute_summary
from mpi_ray.data.clevr_policy.general import GENERAL_DATASET, asked_values, echo_think, noun_phrase, sample_general_question
from mpi_ray.data.clevr_policy.ontology import ATTRIBUTES, describe
from mpi_ray.data.clevr_policy.policy_doc import Policy, build_policy_document, sample_image_examples
from mpi_ray.data.clevr_policy.policy_doc import _SYLLABLE_CONSONANTS, _SYLLABLE_VOWELS
from mpi_ray.data.clevr_policy.records import POLICY_QUESTION, general_record, policy_record
from mpi_ray.data.clevr_policy.sampling import sample_instances
from mpi_ray.data.clevr_policy.scene import kinds_of, sample_scene
from mpi_ray.data.clevr_policy.generator import GeneratorConfig, make_policies
from mpi_ray.data.clevr_policy.tree import Condition, DecisionTree, pattern_holds, sample_tree
from mpi_ray.data.formats import boxed

BASE_DATASET = "clevr_base"
DIRECT_SUFFIX = "Answer with yes or no."
BASE_NAME_SYLLABLES = 4  # run policies use 3: no run policy name can occur in the base data
RESERVED_RUN_SEEDS = range(10)  # trees of runs with these data seeds never occur in the base data
RESERVED_POLICIES = 10
_SCENE_TRIES = 200


@dataclass(frozen=True)
class BaseMix:
    """Shares of the stream (normalized) and the policy depths it samples."""

    perception_think: float = 0.35
    perception_direct: float = 0.15
    policy: float = 0.5
    pictured_fraction: float = 0.25  # of policy samples: -M style (some values shown as pictures)
    min_depth: int = 2
    max_depth: int = 3
    existence_attributes: tuple[str, ...] = tuple(ATTRIBUTES)  # what the existence questions ask about
    existence_width: int | None = None  # conditions per existence question (None: one or two, drawn)
    think: str = "summary"  # the perception questions' think: what the image holds, or "echo": the asked values


def tree_conditions(tree: DecisionTree) -> tuple[tuple[str, str, str], ...]:
    """A tree's structure without its case labels: two trees that ask the same things are the same."""
    return tuple((node.node_id, node.condition.attribute, node.condition.value)
                 for node in tree.decision_nodes() if node.condition is not None)


@lru_cache(maxsize=None)
def reserved_trees(depth: int) -> frozenset[tuple[tuple[str, str, str], ...]]:
    """The depth-`depth` trees of every run with a reserved data seed (a run's trees depend on its
    seed, depth and policy index only)."""
    return frozenset(
        tree_conditions(policy.tree)
        for seed in RESERVED_RUN_SEEDS
        for policy in make_policies(GeneratorConfig(depth=depth, variant="T", policies=RESERVED_POLICIES, seed=seed))
    )


def base_rng(seed: int, purpose: str) -> random.Random:
    return random.Random(f"clevr_base:{seed}:{purpose}")


def base_policy_name(rng: random.Random, depth: int) -> str:
    word = "".join(rng.choice(_SYLLABLE_CONSONANTS) + rng.choice(_SYLLABLE_VOWELS) for _ in range(BASE_NAME_SYLLABLES))
    return f"L{depth}-{word.capitalize()}"


def matching_objects(conditions: tuple[Condition, ...], objects: list[dict[str, Any]]) -> str:
    """'The red objects are the small red metal cube and ...' (the first condition's objects), or 'none'."""
    head = conditions[0]
    found = [f"the {describe(obj)}" for obj in objects if head.matches(obj)]
    return f"The {noun_phrase((head,), plural=True)} are {_join(found) if found else 'none'}."


def _conditions(rng: random.Random, width: int, attributes: tuple[str, ...]) -> tuple[Condition, ...]:
    asked = sorted(rng.sample(list(attributes), width), key=list(ATTRIBUTES).index)
    return tuple(Condition(a, rng.choice(ATTRIBUTES[a])) for a in asked)


def existence_pair(rng: random.Random, image_size: int, width: int | None = None, attributes: tuple[str, ...] = tuple(ATTRIBUTES),
                   ) -> tuple[dict[str, Any], tuple[Condition, ...], tuple[Condition, ...]]:
    """One scene and two questions about it (about `attributes`): one whose answer is yes, one whose
    answer is no. Both are drawn from the same distribution before the scene, and they share the image,
    so neither the question's words nor the image's statistics (a busier scene makes any "yes"
    likelier) tell the answer: only matching the question against the objects does."""
    width = width or rng.choice((1, 2))
    while True:
        present, absent = _conditions(rng, width, attributes), _conditions(rng, width, attributes)
        if present == absent:
            continue
        for _ in range(_SCENE_TRIES):
            scene = sample_scene(rng, image_size, image_size)
            kinds = kinds_of(scene)
            if pattern_holds(present, kinds) and not pattern_holds(absent, kinds):
                return scene, present, absent


def perception_record(rng: random.Random, number: int, image_size: int, direct: bool, mix: BaseMix) -> dict[str, Any]:
    sample_id = f"{BASE_DATASET}-perception-{number:09d}"
    if not direct and rng.random() < 0.25:  # counting, CLEVR's other question type (the forgetting suite asks it)
        scene = sample_scene(rng, image_size, image_size)
        question = sample_general_question(rng, kinds_of(scene), "count")
        record = general_record(sample_id, scene, question)
        if mix.think == "echo":
            record["cot"] = echo_think(asked_values(question.conditions, plural=True), question.answer)
        else:
            record["cot"] = f"<think>{attribute_summary(kinds_of(scene))}</think>"
    else:
        want_yes = rng.random() < 0.5
        scene, present, absent = existence_pair(rng, image_size, mix.existence_width, mix.existence_attributes)
        conditions = present if want_yes else absent
        record = general_record(sample_id, scene, _Question(noun_phrase(conditions, plural=False), want_yes))
        if direct:
            record["query"] = f"Is there a {noun_phrase(conditions, plural=False)}? {DIRECT_SUFFIX}"
            record["cot"] = None
        elif mix.think == "echo":
            record["cot"] = echo_think(asked_values(conditions), record["answer"])
        else:
            summary = attribute_summary(kinds_of(scene))
            detail = f" {matching_objects(conditions, kinds_of(scene))}" if len(conditions) == 2 else ""
            record["cot"] = f"<think>{summary}{detail}</think>"
    record["dataset"] = BASE_DATASET
    return record


def policy_sample(rng: random.Random, number: int, image_size: int, mix: BaseMix) -> dict[str, Any]:
    depth = rng.randint(mix.min_depth, mix.max_depth)
    tree = sample_tree(rng, depth)
    while tree_conditions(tree) in reserved_trees(depth):
        tree = sample_tree(rng, depth)
    name = base_policy_name(rng, depth)
    pictured = rng.random() < mix.pictured_fraction
    examples = sample_image_examples(rng, tree, 0.5) if pictured else {}
    document = build_policy_document(tree, name, examples, max(64, image_size // 2))
    policy = Policy(policy_id=f"{BASE_DATASET}-policy-{number:09d}", tree=tree, document=document)
    instance = sample_instances(rng, policy, 1, image_size, image_size)[0]
    sample_id = f"{BASE_DATASET}-policy-{number:09d}"
    return policy_record(BASE_DATASET, "M" if pictured else "T", "train", sample_id, instance,
                         POLICY_QUESTION.format(name=name), with_cot=True)


def base_records(seed: int, image_size: int, mix: BaseMix, start: int = 0) -> Iterator[dict[str, Any]]:
    """The endless stream from sample `start` on; sample k depends only on (seed, k)."""
    shares = [mix.perception_think, mix.perception_direct, mix.policy]
    number = start
    while True:
        rng = base_rng(seed, f"sample:{number}")
        kind = rng.choices(["think", "direct", "policy"], weights=shares)[0]
        if kind == "policy":
            yield policy_sample(rng, number, image_size, mix)
        else:
            yield perception_record(rng, number, image_size, direct=kind == "direct", mix=mix)
        number += 1


def answered(record: dict[str, Any], answer: str) -> dict[str, Any]:
    """The record with `answer` as its answer (a probe scores both): an echo think says it too."""
    asked = record["meta"].get("asked")
    return {**record, "answer": answer, **({"cot": echo_think(asked, answer)} if asked else {})}


def target_of(record: dict[str, Any]) -> str:
    """The assistant turn: the think (if any), then the boxed answer."""
    answer = boxed(record["answer"])
    return f"{record['cot']}\n{answer}" if record.get("cot") else answer


# --- the perception probe: balanced yes/no on held-out scenes ---


def probe_records(count: int, image_size: int, seed: int = 0, echo: bool = False) -> list[dict[str, Any]]:
    """`count` direct existence questions (count even) on scenes from a stream no training sample
    uses, in pairs: the same scene asked one question whose answer is yes and one whose answer is no,
    half the pairs about one attribute, half about a two-attribute conjunction. A model that does not
    look scores 50% and an AUC near 50 (measured: a random-init model of the default size 49-52).
    `echo`: asked as the general questions are, with the echo think before the answer."""
    rng = base_rng(seed, "probe-pairs")
    records = []
    for pair in range(count // 2):
        width = 1 + pair % 2
        scene, present, absent = existence_pair(rng, image_size, width)
        for conditions, yes in ((present, True), (absent, False)):
            number = len(records)
            phrase = noun_phrase(conditions, plural=False)
            record = general_record(f"{BASE_DATASET}-probe-{number:06d}", scene, _Question(phrase, yes))
            record["dataset"] = BASE_DATASET
            record["meta"] = {"conditions": width, "attributes": [c.attribute for c in conditions]}
            if echo:
                record["meta"]["asked"] = asked_values(conditions)
                record["cot"] = echo_think(record["meta"]["asked"], record["answer"])
            else:
                record["query"] = f"Is there a {phrase}? {DIRECT_SUFFIX}"
            records.append(record)
    return records


@dataclass(frozen=True)
class _Question:
    """The slice of GeneralQuestion that general_record reads."""

    phrase: str
    yes: bool

    @property
    def question(self) -> str:
        return f"Is there a {self.phrase}?"

    @property
    def answer(self) -> str:
        return "yes" if self.yes else "no"

    def describe(self) -> dict[str, object]:
        return {"question_type": "exist"}



