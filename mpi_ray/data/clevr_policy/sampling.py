"""Leaf-balanced scene sampling for one policy: every reachable leaf gets its quota of scenes.

Rejection sampling first: scenes drawn from the natural prior (3-10 objects, each of the 96 kinds
uniform) are kept while their leaf's quota is open. Leaves the prior rarely reaches (under the
prior, 6-12 of a depth-6 tree's 40 leaves have probability < 0.1%, e.g. "no cube and no sphere")
are then filled from the leaf's own constraints: a witness for each true condition plus objects no
false condition rules out, checked by running the tree. Balanced labels also keep exact-match
accuracy honest: under the prior the most common leaf of a depth-6 tree takes 15-25% of scenes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from mpi_ray.data.clevr_policy.ontology import MAX_OBJECTS, MIN_OBJECTS
from mpi_ray.data.clevr_policy.policy_doc import Policy
from mpi_ray.data.clevr_policy.scene import Kind, SceneGraph, kinds_of, place_objects, sample_kinds
from mpi_ray.data.clevr_policy.tree import Decision, DecisionTree, Node, allowed_kinds, evaluate


@dataclass(frozen=True)
class Instance:
    """One scene asked under one policy, with its gold path."""

    policy: Policy
    scene: SceneGraph
    decision: Decision
    sampled_by: str  # "natural" (prior draw kept by rejection) | "targeted" (built from the leaf)


def leaf_quotas(rng: random.Random, leaves: Sequence[Node], count: int) -> dict[str, int]:
    """`count` samples spread over the leaves as evenly as possible (the remainder to random leaves)."""
    quotas = {leaf.node_id: count // len(leaves) for leaf in leaves}
    for leaf in rng.sample(list(leaves), count % len(leaves)):
        quotas[leaf.node_id] += 1
    return quotas


def kinds_reaching(rng: random.Random, leaf: Node) -> list[Kind]:
    """Objects for a scene that lands on `leaf`: a witness per true condition, the rest any kind
    that no false condition rules out. Both exist because every leaf is reachable (tree.is_reachable),
    and a path has at most four true conditions, so 3-10 objects always suffice."""
    allowed = allowed_kinds(leaf.path)
    witnesses = [
        dict(rng.choice([kind for kind in allowed if all(c.matches(kind) for c in literal.pattern)]))
        for literal in leaf.path
        if literal.holds
    ]
    count = rng.randint(max(MIN_OBJECTS, len(witnesses)), MAX_OBJECTS)
    kinds = witnesses + [dict(rng.choice(allowed)) for _ in range(count - len(witnesses))]
    rng.shuffle(kinds)
    return kinds


def sample_leaf_balanced(
    rng: random.Random, tree: DecisionTree, count: int, draws_per_sample: int
) -> list[tuple[list[Kind], str]]:
    """`count` object lists whose leaves meet the quotas, each tagged natural or targeted, shuffled."""
    leaves = tree.leaves()
    quotas = leaf_quotas(rng, leaves, count)
    chosen: dict[str, list[tuple[list[Kind], str]]] = {leaf.node_id: [] for leaf in leaves}
    open_leaves = sum(1 for quota in quotas.values() if quota > 0)
    for _ in range(draws_per_sample * count):
        if open_leaves == 0:
            break
        kinds = sample_kinds(rng)
        leaf_id = evaluate(tree, kinds).leaf.node_id
        if len(chosen[leaf_id]) < quotas[leaf_id]:
            chosen[leaf_id].append((kinds, "natural"))
            open_leaves -= len(chosen[leaf_id]) == quotas[leaf_id]
    for leaf in leaves:
        while len(chosen[leaf.node_id]) < quotas[leaf.node_id]:
            kinds = kinds_reaching(rng, leaf)
            assert evaluate(tree, kinds).leaf is leaf, f"targeted scene missed leaf {leaf.node_id}"
            chosen[leaf.node_id].append((kinds, "targeted"))
    picked = [item for leaf in leaves for item in chosen[leaf.node_id]]
    rng.shuffle(picked)
    return picked


def sample_instances(
    rng: random.Random, policy: Policy, count: int, width: int, height: int, draws_per_sample: int = 20
) -> list[Instance]:
    """`count` leaf-balanced scenes for a policy, laid out in a width x height image; objects that
    do not fit the frame are replaced by targeted ones for the same leaf."""
    instances = []
    for kinds, sampled_by in sample_leaf_balanced(rng, policy.tree, count, draws_per_sample):
        leaf = evaluate(policy.tree, kinds).leaf
        scene = place_objects(rng, kinds, width, height)
        while scene is None:
            kinds, sampled_by = kinds_reaching(rng, leaf), "targeted"
            scene = place_objects(rng, kinds, width, height)
        instances.append(Instance(policy, scene, evaluate(policy.tree, kinds_of(scene)), sampled_by))
    return instances
