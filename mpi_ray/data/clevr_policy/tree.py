"""Policies as binary decision trees over scene graphs: sampling, evaluation, reachability.

Semantics (the paper leaves them open; these are our decisions, see the README):
- A decision node asks whether the scene has an object that satisfies its *pattern*: the
  conditions of all its true-edge ancestors (its context) plus its own attribute = value. So
  conditions accumulate along true edges: "a cyan object", then "one of those that is also small".
- A node never samples an attribute type already in its context (the paper's rule, applied to the
  whole chain of true edges): re-testing it would be always true or always false.
- A branch is kept only if some scene reaches it: a sampled condition that would make either child
  unreachable (e.g. "cylinder?" after "no cube" and "no sphere") is replaced by another, and a node
  with no such condition left, or whose context already uses all four attribute types, or at depth
  N, becomes a leaf. Every leaf is therefore reachable, and each leaf gets its own "Case k"
  (k = 0..L-1 in a random order), so no two leaves share an answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from mpi_ray.data.clevr_policy.ontology import ATTRIBUTE_TYPES, ATTRIBUTES, OBJECT_KINDS

ObjectAttributes = Mapping[str, Any]  # at least shape, color, size, material


@dataclass(frozen=True)
class Condition:
    attribute: str
    value: str

    def matches(self, obj: ObjectAttributes) -> bool:
        return bool(obj[self.attribute] == self.value)


Pattern = tuple[Condition, ...]  # a conjunction: one object must satisfy all of them


@dataclass(frozen=True)
class Literal:
    """One checked condition on a root path: "some object matches `pattern`" is `holds`."""

    pattern: Pattern
    holds: bool


@dataclass
class Node:
    node_id: str  # "1", "1.1", "1.2.1": the true child appends ".1", the false child ".2"
    context: Pattern  # conditions of the true-edge ancestors, root first
    anchor_id: str | None  # the nearest true-edge ancestor: the condition whose objects this one narrows
    path: tuple[Literal, ...]  # what must hold for a scene to reach this node
    condition: Condition | None = None  # None for a leaf
    if_true: Node | None = None
    if_false: Node | None = None
    case: int | None = None  # leaves only

    @property
    def is_leaf(self) -> bool:
        return self.condition is None

    @property
    def pattern(self) -> Pattern:
        assert self.condition is not None, f"leaf {self.node_id} has no pattern"
        return self.context + (self.condition,)


@dataclass
class DecisionTree:
    depth: int
    root: Node
    _by_id: dict[str, Node] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {node.node_id: node for node in self.nodes()}

    def nodes(self) -> Iterator[Node]:
        """Every node in preorder (the order the policy document lists conditions)."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            if not node.is_leaf:
                assert node.if_true is not None and node.if_false is not None
                stack.extend((node.if_false, node.if_true))

    def decision_nodes(self) -> list[Node]:
        return [node for node in self.nodes() if not node.is_leaf]

    def leaves(self) -> list[Node]:
        return [node for node in self.nodes() if node.is_leaf]

    def node(self, node_id: str) -> Node:
        return self._by_id[node_id]


@dataclass(frozen=True)
class Step:
    node_id: str
    holds: bool


@dataclass(frozen=True)
class Decision:
    """The gold path through a tree for one scene, and the leaf it ends at."""

    steps: tuple[Step, ...]
    leaf: Node

    @property
    def answer(self) -> str:
        return case_label(self.leaf)


def case_label(leaf: Node) -> str:
    assert leaf.case is not None
    return f"Case {leaf.case}"


def pattern_holds(pattern: Pattern, objects: Sequence[ObjectAttributes]) -> bool:
    return any(all(condition.matches(obj) for condition in pattern) for obj in objects)


def evaluate(tree: DecisionTree, objects: Sequence[ObjectAttributes]) -> Decision:
    """Run the tree on a scene's objects: the ground truth of every ClevrPolicy instance."""
    node = tree.root
    steps: list[Step] = []
    while not node.is_leaf:
        holds = pattern_holds(node.pattern, objects)
        steps.append(Step(node.node_id, holds))
        next_node = node.if_true if holds else node.if_false
        assert next_node is not None
        node = next_node
    return Decision(tuple(steps), node)


# --- reachability: exact, over the 96 object kinds ---


def allowed_kinds(path: Sequence[Literal]) -> list[dict[str, str]]:
    """Object kinds a scene on this path may contain: those no false literal rules out."""
    forbidden = [literal.pattern for literal in path if not literal.holds]
    return [kind for kind in OBJECT_KINDS if not any(pattern_holds(p, [kind]) for p in forbidden)]


def is_reachable(path: Sequence[Literal]) -> bool:
    """Some scene satisfies every literal: each true pattern has an allowed witness kind.

    A scene needs at least one object; duplicates of allowed kinds fill it to 3..10 objects, and a
    path has at most four true literals (one per attribute type), so the object count never binds.
    """
    allowed = allowed_kinds(path)
    if not allowed:
        return False
    return all(pattern_holds(literal.pattern, allowed) for literal in path if literal.holds)


# --- sampling ---


def sample_tree(rng: random.Random, depth: int) -> DecisionTree:
    """A random policy tree of `depth` decision levels whose leaves are all reachable."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    root = _grow(rng, "1", context=(), anchor_id=None, path=(), levels_left=depth)
    tree = DecisionTree(depth=depth, root=root)
    leaves = tree.leaves()
    cases = list(range(len(leaves)))
    rng.shuffle(cases)
    for leaf, case in zip(leaves, cases):
        leaf.case = case
    return tree


def _grow(
    rng: random.Random, node_id: str, context: Pattern, anchor_id: str | None, path: tuple[Literal, ...], levels_left: int
) -> Node:
    node = Node(node_id=node_id, context=context, anchor_id=anchor_id, path=path)
    condition = _sample_condition(rng, context, path) if levels_left > 0 else None
    if condition is None:
        return node
    pattern = context + (condition,)
    node.condition = condition
    node.if_true = _grow(rng, f"{node_id}.1", pattern, node_id, path + (Literal(pattern, True),), levels_left - 1)
    node.if_false = _grow(rng, f"{node_id}.2", context, anchor_id, path + (Literal(pattern, False),), levels_left - 1)
    return node


def _sample_condition(rng: random.Random, context: Pattern, path: tuple[Literal, ...]) -> Condition | None:
    """An attribute type (uniform), then a value (uniform), among those keeping both branches reachable.

    Same test as `is_reachable` on the two extended paths, computed once for all options: the
    true branch keeps the allowed kinds and needs a witness for the new pattern; the false branch
    loses the kinds matching it and must keep a witness for every earlier true pattern.
    """
    used = {condition.attribute for condition in context}
    allowed = allowed_kinds(path)
    earlier_true = [literal.pattern for literal in path if literal.holds]
    options: dict[str, list[str]] = {}
    for attribute in ATTRIBUTE_TYPES:
        if attribute in used:
            continue
        for value in ATTRIBUTES[attribute]:
            pattern = context + (Condition(attribute, value),)
            left_if_false = [kind for kind in allowed if not pattern_holds(pattern, [kind])]
            true_reachable = pattern_holds(pattern, allowed)
            false_reachable = bool(left_if_false) and all(pattern_holds(p, left_if_false) for p in earlier_true)
            if true_reachable and false_reachable:
                options.setdefault(attribute, []).append(value)
    if not options:
        return None
    attribute = rng.choice(sorted(options, key=ATTRIBUTE_TYPES.index))
    return Condition(attribute, rng.choice(options[attribute]))


# --- serialization (manifest, debugging) ---


def tree_to_dict(node: Node) -> dict[str, Any]:
    if node.is_leaf:
        return {"id": node.node_id, "case": node.case}
    assert node.condition is not None and node.if_true is not None and node.if_false is not None
    return {
        "id": node.node_id,
        "attribute": node.condition.attribute,
        "value": node.condition.value,
        "anchor": node.anchor_id,
        "true": tree_to_dict(node.if_true),
        "false": tree_to_dict(node.if_false),
    }
