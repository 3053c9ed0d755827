"""ClevrPolicy decision trees: the sampling rules, evaluation by brute force, exact reachability,
and the policy document parsed back into the same tree (text and tree agree)."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from mpi_ray.data.clevr_policy.ontology import ATTRIBUTES, OBJECT_KINDS
from mpi_ray.data.clevr_policy.policy_doc import build_policy_document, sample_image_examples
from mpi_ray.data.clevr_policy.sampling import kinds_reaching
from mpi_ray.data.clevr_policy.scene import sample_kinds
from mpi_ray.data.clevr_policy.tree import Condition, DecisionTree, Literal, evaluate, is_reachable, sample_tree
from mpi_ray.data.schema import POLICY_IMAGE_MARK

# Leaves per tree under our rules (README): 2^N while four attribute types last, fewer below.
EXPECTED_LEAVES = {1: 2, 2: 4, 3: 8, 4: 16, 5: 28, 6: 40}
VALUE_TO_ATTRIBUTE = {value: attribute for attribute, values in ATTRIBUTES.items() for value in values}


def trees(depth: int, count: int, seed: int = 0) -> list[DecisionTree]:
    rng = random.Random(f"test-trees:{depth}:{seed}")
    return [sample_tree(rng, depth) for _ in range(count)]


def literal_holds(literal: Literal, objects: list[dict[str, str]]) -> bool:
    """Independent of tree.pattern_holds: some object carries every (attribute, value) of the pattern."""
    pairs = [(condition.attribute, condition.value) for condition in literal.pattern]
    return any(all(obj[attribute] == value for attribute, value in pairs) for obj in objects) == literal.holds


@pytest.mark.parametrize("depth", sorted(EXPECTED_LEAVES))
def test_leaf_counts_per_depth(depth: int) -> None:
    counts = {len(tree.leaves()) for tree in trees(depth, 25)}
    assert counts == {EXPECTED_LEAVES[depth]}


@pytest.mark.parametrize("depth", [2, 4, 6])
def test_sampling_rules(depth: int) -> None:
    for tree in trees(depth, 10):
        leaves = tree.leaves()
        assert sorted(leaf.case or 0 for leaf in leaves) == list(range(len(leaves)))  # one Case per leaf
        assert all(len(leaf.path) <= depth for leaf in leaves)
        for node in tree.decision_nodes():
            assert node.condition is not None and node.if_true is not None and node.if_false is not None
            # Never re-sample an attribute type a true-edge ancestor used.
            assert node.condition.attribute not in {c.attribute for c in node.context}
            # Conditions accumulate along true edges; a false edge keeps the context and anchor.
            assert node.if_true.context == node.context + (node.condition,)
            assert node.if_true.anchor_id == node.node_id
            assert node.if_false.context == node.context
            assert node.if_false.anchor_id == node.anchor_id
            assert (node.if_true.node_id, node.if_false.node_id) == (f"{node.node_id}.1", f"{node.node_id}.2")
            if node.anchor_id is not None:
                assert tree.node(node.anchor_id).if_true is not None
                assert node.context == tree.node(node.anchor_id).pattern


def test_evaluate_agrees_with_brute_force_over_leaf_paths() -> None:
    """The leaf evaluate() picks is the only leaf whose every path literal holds, checked directly."""
    rng = random.Random("brute-force")
    for depth in (1, 2, 4, 6):
        for tree in trees(depth, 6):
            scenes = [sample_kinds(rng) for _ in range(150)]
            scenes += [kinds_reaching(rng, leaf) for leaf in tree.leaves()]
            for objects in scenes:
                matching = [leaf for leaf in tree.leaves() if all(literal_holds(lit, objects) for lit in leaf.path)]
                assert len(matching) == 1
                decision = evaluate(tree, objects)
                assert decision.leaf is matching[0]
                assert [(s.node_id, s.holds) for s in decision.steps] == [
                    (tree.node(decision.leaf.node_id[: 2 * i + 1]).node_id, lit.holds)
                    for i, lit in enumerate(decision.leaf.path)
                ]


def small_scenes() -> list[list[dict[str, str]]]:
    """Every scene built from at most two object kinds (duplicates fill it to 3 objects)."""
    singles = [[kind] * 3 for kind in OBJECT_KINDS]
    pairs = [[a, a, b] for a, b in itertools.combinations(OBJECT_KINDS, 2)]
    return singles + pairs


def test_every_leaf_reachable_exhaustive_at_depth_2() -> None:
    """At N=2 a path has at most two true conditions, so scenes of <= 2 kinds reach every reachable leaf."""
    scenes = small_scenes()
    for tree in trees(2, 4):
        reached = {evaluate(tree, objects).leaf.node_id for objects in scenes}
        assert reached == {leaf.node_id for leaf in tree.leaves()}


def test_is_reachable_matches_exhaustive_search() -> None:
    """Reachability of every candidate branch at the top two levels, against all <= 2-kind scenes."""
    scenes = small_scenes()
    tree = trees(2, 1, seed=7)[0]
    for node in (tree.root, tree.root.if_true, tree.root.if_false):
        assert node is not None
        used = {c.attribute for c in node.context}
        for attribute, values in ATTRIBUTES.items():
            if attribute in used:
                continue
            for value in values:
                pattern = node.context + (Condition(attribute, value),)
                for holds in (True, False):
                    path = node.path + (Literal(pattern, holds),)
                    exists = any(all(literal_holds(lit, objects) for lit in path) for objects in scenes)
                    assert is_reachable(path) == exists, (node.node_id, attribute, value, holds)


@pytest.mark.parametrize("depth", [4, 6])
def test_every_leaf_reachable_and_targeted_scenes_land_on_it(depth: int) -> None:
    rng = random.Random("targeted")
    for tree in trees(depth, 5):
        for leaf in tree.leaves():
            assert is_reachable(leaf.path)
            for _ in range(3):
                objects = kinds_reaching(rng, leaf)
                assert 3 <= len(objects) <= 10
                assert evaluate(tree, objects).leaf is leaf


def test_same_seed_same_tree() -> None:
    a, b = sample_tree(random.Random(3), 6), sample_tree(random.Random(3), 6)
    assert [(n.node_id, n.condition, n.case) for n in a.nodes()] == [(n.node_id, n.condition, n.case) for n in b.nodes()]


# --- parse-back: the document alone determines the same tree and the same answers ---

LINE = re.compile(r"^# Condition ([\d.]+): If (.+), (go to Condition [\d.]+|the response is Case \d+)\. Otherwise, (go to Condition [\d.]+|the response is Case \d+)\.$")
TOP_WORD = re.compile(r"^there is an? (\w+)(?: object)? in the image$")
TOP_PICTURE = re.compile(r"^there is an object in the image that (?:has the same (\w+)|is made of the same (material)) as the example object " + re.escape(POLICY_IMAGE_MARK) + "$")
ANCHORED_WORD = re.compile(r"^one of the objects that satisfy Condition ([\d.]+) is also (?:made of |a )?(\w+)$")
ANCHORED_PICTURE = re.compile(r"^one of the objects that satisfy Condition ([\d.]+) (?:also has the same (\w+)|is also made of the same (material)) as the example object " + re.escape(POLICY_IMAGE_MARK) + "$")


def parse_policy(text: str, picture_values: list[str]) -> dict[str, dict[object, object]]:
    """Condition id -> attribute, value, anchor, and both outcomes, read from the text only;
    pictured values are taken from the pictures in order (their value is what they stand for)."""
    pictures = iter(picture_values)
    conditions: dict[str, dict[object, object]] = {}
    for line in text.splitlines():
        if not line.startswith("# Condition"):
            continue
        match = LINE.match(line)
        assert match, line
        condition_id, check, if_true, if_false = match.groups()
        anchor = None
        if found := TOP_WORD.match(check):
            value = found.group(1)
            attribute = VALUE_TO_ATTRIBUTE[value]
        elif found := TOP_PICTURE.match(check):
            attribute = found.group(1) or found.group(2)
            value = next(pictures)
        elif found := ANCHORED_WORD.match(check):
            anchor, value = found.groups()
            attribute = VALUE_TO_ATTRIBUTE[value]
        elif found := ANCHORED_PICTURE.match(check):
            anchor, attribute = found.group(1), found.group(2) or found.group(3)
            value = next(pictures)
        else:
            raise AssertionError(f"unparsed condition: {check}")
        assert VALUE_TO_ATTRIBUTE[value] == attribute
        conditions[condition_id] = {"attribute": attribute, "value": value, "anchor": anchor, True: if_true, False: if_false}
    assert next(pictures, None) is None
    return conditions


def run_parsed(conditions: dict[str, dict[object, object]], objects: list[dict[str, str]]) -> str:
    """Follow the parsed document: a condition narrows the objects of its anchor (recursively)."""

    def pattern(condition_id: str) -> list[tuple[str, str]]:
        entry = conditions[condition_id]
        own = [(str(entry["attribute"]), str(entry["value"]))]
        return (pattern(str(entry["anchor"])) if entry["anchor"] else []) + own

    current = "1"
    while True:
        pairs = pattern(current)
        holds = any(all(obj[a] == v for a, v in pairs) for obj in objects)
        outcome = str(conditions[current][holds])
        if outcome.startswith("the response is "):
            return outcome.removeprefix("the response is ")
        current = outcome.removeprefix("go to Condition ")


@pytest.mark.parametrize("variant", ["T", "M"])
@pytest.mark.parametrize("depth", [2, 6])
def test_policy_text_parses_back_to_the_tree(variant: str, depth: int) -> None:
    rng = random.Random(f"parse:{variant}:{depth}")
    for tree in trees(depth, 3, seed=1):
        examples = sample_image_examples(rng, tree, 0.5) if variant == "M" else {}
        document = build_policy_document(tree, "L9-Testa", examples, crop_size=64)
        assert document.text.count(POLICY_IMAGE_MARK) == len(document.images) == len(examples)
        assert "--- Policy: L9-Testa ---" in document.text
        parsed = parse_policy(document.text, [image.value for image in document.images])
        # Structure: the same conditions, in preorder, with the same values, anchors and outcomes.
        assert list(parsed) == [node.node_id for node in tree.decision_nodes()]
        for node in tree.decision_nodes():
            assert node.condition is not None and node.if_true is not None and node.if_false is not None
            entry = parsed[node.node_id]
            assert (entry["attribute"], entry["value"], entry["anchor"]) == (node.condition.attribute, node.condition.value, node.anchor_id)
            for holds, child in ((True, node.if_true), (False, node.if_false)):
                expected = f"the response is Case {child.case}" if child.is_leaf else f"go to Condition {child.node_id}"
                assert entry[holds] == expected
        # Semantics: reading the document gives the tree's answer on every scene.
        for _ in range(60):
            objects = sample_kinds(rng)
            assert run_parsed(parsed, objects) == evaluate(tree, objects).answer
        for leaf in tree.leaves():
            assert run_parsed(parsed, kinds_reaching(rng, leaf)) == f"Case {leaf.case}"


@pytest.mark.parametrize("depth", [2, 4])
def test_cot_evidence_names_objects_only_by_the_attributes_checked_on_the_path(depth: int) -> None:
    """A decision must be read from the image, not copied: no evidence before it names an attribute
    its path has not checked yet (e.g. the shape of the yellow object before 'is it a cylinder?')."""
    from mpi_ray.data.clevr_policy.cot import cot_target

    rng = random.Random(f"cot-evidence:{depth}")
    for tree in trees(depth, 4, seed=2):
        document = build_policy_document(tree, "L9-Testa")
        for _ in range(20):
            objects = [{**kind, "position": [rng.uniform(-3, 3), rng.uniform(-3, 3)]} for kind in sample_kinds(rng)]
            decision = evaluate(tree, objects)
            steps = re.findall(r"Condition ([\d.]+) checks whether .*?\. (?:Yes|No): (.*?) So ", cot_target(
                tree, decision, objects, document), flags=re.S)
            assert [node_id for node_id, _ in steps] == [step.node_id for step in decision.steps]
            for node_id, evidence in steps:
                named = {VALUE_TO_ATTRIBUTE[word] for word in re.findall(r"[a-z]+", evidence) if word in VALUE_TO_ATTRIBUTE}
                assert named <= {condition.attribute for condition in tree.node(node_id).pattern}, (node_id, evidence)
