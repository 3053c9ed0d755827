"""Synthetic GTAPolicy instances: plan which rule branch each instance exercises, sample a profile that
takes that branch, and build a task for the tool.

Every branch of every version rule gets at least one instance in a split of at least as many instances
as there are branches (26); the rest are drawn by tool weights. Deterministic for (seed, split).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable

from mpi_ray.data.gta_policy.instances import Task
from mpi_ray.data.gta_policy.rules import (
    ACCOUNT_TYPES,
    AGE_THRESHOLDS,
    CREDIT_THRESHOLDS,
    RULES,
    Profile,
    Rule,
    resolve,
    rules_for,
)
from mpi_ray.data.gta_policy.scenarios import TARGET_KEYS, make_task

PAPER_TRAIN, PAPER_TEST = 451, 106
# Roughly GTA's own mix: perception tools and the calculator dominate, creative tools are rare.
TARGET_WEIGHTS: dict[str, float] = {
    "OCR": 3, "ImageDescription": 3, "Calculator": 2, "GoogleSearch": 2, "CountGivenObject": 2,
    "TextToBbox": 2, "RegionAttributeDescription": 2, "MathOCR": 1, "Solver": 1, "Plot": 1,
    "DrawBox": 1, "AddText": 1, "TextToImage": 1, "ImageStylization": 1,
}
CREDITS_RANGE, AGE_RANGE = (0, 1000), (14, 80)
NEAR_THRESHOLD = 0.3  # share of credits/ages drawn at or next to a threshold, where rules are easy to confuse
MAX_PROFILE_TRIES = 10_000


@dataclass(frozen=True)
class Slot:
    target_key: str  # a key of scenarios.BUILDERS
    branch_id: str | None  # the rule branch the profile must take; None for unversioned tools


def target_kind(target_key: str) -> tuple[str, bool]:
    """(tool type, image_has_math) of a target key: MathOCR is OCR on an image with math (rule 7)."""
    return ("OCR", True) if target_key == "MathOCR" else (target_key, False)


def branches_for(target_key: str, rules: Iterable[Rule] = RULES) -> list[str]:
    tool_type, math = target_kind(target_key)
    return [
        rule.branch_id(i)
        for rule in rules_for(rules, tool_type)
        if rule.tests_image_content == math
        for i in range(len(rule.branches))
    ]


class BranchCycle:
    """Visits the branches of each target key in turn (reshuffled every round), so counts stay even."""

    def __init__(self, rng: random.Random, rules: Iterable[Rule] = RULES) -> None:
        self.rng, self.rules = rng, tuple(rules)
        self.pending: dict[str, list[str | None]] = {}

    def next(self, target_key: str) -> Slot:
        if not self.pending.get(target_key):
            branches: list[str | None] = list(branches_for(target_key, self.rules))
            self.pending[target_key] = self.rng.sample(branches, len(branches)) or [None]
        return Slot(target_key, self.pending[target_key].pop())


def plan_slots(count: int, rng: random.Random, rules: Iterable[Rule] = RULES) -> list[Slot]:
    """Every branch once (when `count` allows), then target keys by weight with their branches in turn."""
    rules = tuple(rules)
    required = [Slot(key, branch) for key in TARGET_KEYS for branch in branches_for(key, rules)]
    if count <= len(required):
        return rng.sample(required, count)
    keys, weights = list(TARGET_WEIGHTS), list(TARGET_WEIGHTS.values())
    cycle = BranchCycle(rng, rules)
    slots = required + [cycle.next(key) for key in rng.choices(keys, weights, k=count - len(required))]
    rng.shuffle(slots)
    return slots


def _near(thresholds: tuple[int, ...]) -> list[int]:
    return [t + delta for t in thresholds for delta in (-1, 0, 1)]


def random_profile(rng: random.Random) -> Profile:
    credits = rng.choice(_near(CREDIT_THRESHOLDS)) if rng.random() < NEAR_THRESHOLD else rng.randint(*CREDITS_RANGE)
    age = rng.choice(_near(AGE_THRESHOLDS)) if rng.random() < NEAR_THRESHOLD else rng.randint(*AGE_RANGE)
    return Profile(rng.choice(ACCOUNT_TYPES), credits, age)


def sample_profile(slot: Slot, rng: random.Random, rules: Iterable[Rule] = RULES) -> Profile:
    """A random profile that takes the slot's branch (rejection sampling keeps the base distribution)."""
    if slot.branch_id is None:
        return random_profile(rng)
    rules = tuple(rules)
    tool_type, math = target_kind(slot.target_key)
    for _ in range(MAX_PROFILE_TRIES):
        profile = random_profile(rng)
        if resolve(tool_type, profile, math, rules).branch_id == slot.branch_id:
            return profile
    raise RuntimeError(f"no profile found for branch {slot.branch_id}")


def generate_split(split: str, count: int, seed: int) -> list[tuple[Task, Profile]]:
    """`count` (task, profile) pairs of one split; the split name is part of the seed."""
    rng = random.Random(f"gta_policy/{seed}/{split}")
    pairs = []
    for slot in plan_slots(count, rng):
        profile = sample_profile(slot, rng)
        pairs.append((make_task(slot.target_key, rng), profile))
    return pairs
