"""The 24 GTAPolicy rules, the override, and the policy document.

Every version rule (1-20) is checked against a hand-written table of profiles at and around its
thresholds; the expected names are written out here, not derived from the rule data. The four tips
(21-24) are checked on generated instances in test_gta_generator.py.
"""

from __future__ import annotations

import itertools

import pytest

from mpi_ray.data.gta_policy.policy_doc import OVERRIDE_HEADER, describe_rule, render_override_block, render_policy
from mpi_ray.data.gta_policy.rules import (
    RULES,
    Profile,
    apply_override,
    branch_conditions,
    branch_ids,
    override_rules,
    resolve,
    rule_by_id,
    rules_for,
    tip_ids,
)
from mpi_ray.data.gta_policy.tools import TOOL_TYPES, VERSIONED_TOOLS

# (tool type, account, credits, age, image_has_math, expected name, expected branch)
TABLE = [
    # ImageDescription: A -> v5; B/C -> v4 if credits > 500 else v3; D -> v2 if credits > 500 else v1
    ("ImageDescription", "A", 0, 30, False, "ImageDescription_v5", "R1"),
    ("ImageDescription", "A", 1000, 14, False, "ImageDescription_v5", "R1"),
    ("ImageDescription", "B", 500, 30, False, "ImageDescription_v3", "R2b"),
    ("ImageDescription", "B", 501, 30, False, "ImageDescription_v4", "R2a"),
    ("ImageDescription", "C", 499, 30, False, "ImageDescription_v3", "R2b"),
    ("ImageDescription", "C", 501, 70, False, "ImageDescription_v4", "R2a"),
    ("ImageDescription", "D", 500, 30, False, "ImageDescription_v1", "R3b"),
    ("ImageDescription", "D", 501, 30, False, "ImageDescription_v2", "R3a"),
    ("ImageDescription", "D", 0, 65, False, "ImageDescription_v1", "R3b"),
    # OCR: credits <= 250 -> v5; 250 < credits <= 750 -> v4 if A/B else v3; > 750 -> v2 if age < 21 else v1
    ("OCR", "C", 0, 30, False, "OCR_v5", "R4"),
    ("OCR", "A", 249, 30, False, "OCR_v5", "R4"),
    ("OCR", "B", 250, 30, False, "OCR_v5", "R4"),
    ("OCR", "A", 251, 30, False, "OCR_v4", "R5a"),
    ("OCR", "C", 251, 30, False, "OCR_v3", "R5b"),
    ("OCR", "B", 750, 15, False, "OCR_v4", "R5a"),
    ("OCR", "D", 750, 30, False, "OCR_v3", "R5b"),
    ("OCR", "A", 751, 20, False, "OCR_v2", "R6a"),
    ("OCR", "A", 751, 21, False, "OCR_v1", "R6b"),
    ("OCR", "D", 1000, 14, False, "OCR_v2", "R6a"),
    ("OCR", "C", 900, 60, False, "OCR_v1", "R6b"),
    # Rule 7: math in the image -> MathOCR, whatever the profile
    ("OCR", "A", 100, 30, True, "MathOCR", "R7"),
    ("OCR", "D", 900, 15, True, "MathOCR", "R7"),
    ("OCR", "B", 500, 21, True, "MathOCR", "R7"),
    # GoogleSearch: age < 21 -> v1; age >= 21 -> v2 if credits < 500 else v3
    ("GoogleSearch", "A", 900, 20, False, "GoogleSearch_v1", "R8"),
    ("GoogleSearch", "D", 0, 14, False, "GoogleSearch_v1", "R8"),
    ("GoogleSearch", "B", 499, 21, False, "GoogleSearch_v2", "R9a"),
    ("GoogleSearch", "B", 500, 21, False, "GoogleSearch_v3", "R9b"),
    ("GoogleSearch", "C", 0, 60, False, "GoogleSearch_v2", "R9a"),
    ("GoogleSearch", "C", 501, 22, False, "GoogleSearch_v3", "R9b"),
    # TextToImage: A/B/C -> v1; D -> v2 if credits > 500 else v3
    ("TextToImage", "A", 0, 30, False, "TextToImage_v1", "R10"),
    ("TextToImage", "B", 1000, 30, False, "TextToImage_v1", "R10"),
    ("TextToImage", "C", 501, 30, False, "TextToImage_v1", "R10"),
    ("TextToImage", "D", 500, 30, False, "TextToImage_v3", "R11b"),
    ("TextToImage", "D", 501, 30, False, "TextToImage_v2", "R11a"),
    # RegionAttributeDescription: A/B -> v2; C/D -> v1
    ("RegionAttributeDescription", "A", 0, 30, False, "RegionAttributeDescription_v2", "R12"),
    ("RegionAttributeDescription", "B", 1000, 70, False, "RegionAttributeDescription_v2", "R12"),
    ("RegionAttributeDescription", "C", 0, 14, False, "RegionAttributeDescription_v1", "R13"),
    ("RegionAttributeDescription", "D", 750, 30, False, "RegionAttributeDescription_v1", "R13"),
    # CountGivenObject: < 250 -> v1; [250, 500) -> v2; [500, 750) -> v3; >= 750 -> v4
    ("CountGivenObject", "A", 0, 30, False, "CountGivenObject_v1", "R14"),
    ("CountGivenObject", "A", 249, 30, False, "CountGivenObject_v1", "R14"),
    ("CountGivenObject", "B", 250, 30, False, "CountGivenObject_v2", "R15"),
    ("CountGivenObject", "C", 499, 30, False, "CountGivenObject_v2", "R15"),
    ("CountGivenObject", "D", 500, 30, False, "CountGivenObject_v3", "R16"),
    ("CountGivenObject", "A", 749, 30, False, "CountGivenObject_v3", "R16"),
    ("CountGivenObject", "B", 750, 30, False, "CountGivenObject_v4", "R17"),
    ("CountGivenObject", "C", 1000, 30, False, "CountGivenObject_v4", "R17"),
    # ImageStylization: age < 21 -> v1; [21, 60) -> v2; >= 60 -> v3
    ("ImageStylization", "A", 500, 14, False, "ImageStylization_v1", "R18"),
    ("ImageStylization", "A", 500, 20, False, "ImageStylization_v1", "R18"),
    ("ImageStylization", "B", 500, 21, False, "ImageStylization_v2", "R19"),
    ("ImageStylization", "C", 500, 59, False, "ImageStylization_v2", "R19"),
    ("ImageStylization", "D", 500, 60, False, "ImageStylization_v3", "R20"),
    ("ImageStylization", "D", 0, 80, False, "ImageStylization_v3", "R20"),
]

# The paper's override example (§5.4): the OCR version order reversed.
OVERRIDE_OCR_TABLE = [
    ("A", 250, 30, "OCR_v1"),
    ("D", 0, 70, "OCR_v1"),
    ("A", 251, 30, "OCR_v2"),
    ("B", 750, 30, "OCR_v2"),
    ("C", 251, 30, "OCR_v3"),
    ("D", 750, 30, "OCR_v3"),
    ("A", 751, 20, "OCR_v4"),
    ("C", 751, 21, "OCR_v5"),
]

UNVERSIONED = ("Calculator", "TextToBbox", "Plot", "MathOCR", "Solver", "DrawBox", "AddText")


@pytest.mark.parametrize("tool_type, account, credits, age, math, expected, branch", TABLE)
def test_rule_table(tool_type: str, account: str, credits: int, age: int, math: bool, expected: str, branch: str) -> None:
    resolution = resolve(tool_type, Profile(account, credits, age), image_has_math=math)
    assert (resolution.tool, resolution.branch_id) == (expected, branch)
    assert resolution.rule_id == branch.rstrip("ab")


def test_table_exercises_every_branch_of_rules_1_to_20() -> None:
    assert {row[-1] for row in TABLE} == set(branch_ids(RULES))
    assert {row[-1].rstrip("ab") for row in TABLE} == {f"R{i}" for i in range(1, 21)}


def test_there_are_24_rules_20_version_rules_and_4_tips() -> None:
    assert [rule.rule_id for rule in RULES] == [f"R{i}" for i in range(1, 25)]
    assert tip_ids(RULES) == ["R21", "R22", "R23", "R24"]
    assert len(branch_ids(RULES)) == 26


def _matching_branches(tool_type: str, profile: Profile, math: bool) -> list[str]:
    """Every branch whose whole condition holds (no first-match shortcut), for the partition check."""
    found = []
    for rule in rules_for(RULES, tool_type):
        if rule.tests_image_content != math:
            continue
        for index in range(len(rule.branches)):
            branch_id = rule.branch_id(index)
            _, condition = branch_conditions(RULES, branch_id)
            facts = {**profile.as_dict(), "image_has_math": math}
            if all(clause.holds(facts) for clause in condition):
                found.append(branch_id)
    return found


def test_profile_rules_partition_the_profile_space() -> None:
    """For every versioned tool and every profile on a grid through all thresholds, exactly one branch holds."""
    credit_values = sorted({0, 1000} | {t + d for t in (250, 500, 750) for d in (-1, 0, 1)})
    age_values = sorted({14, 80} | {t + d for t in (21, 60) for d in (-1, 0, 1)})
    for tool_type in VERSIONED_TOOLS:
        for account, credits, age in itertools.product("ABCD", credit_values, age_values):
            profile = Profile(account, credits, age)
            matches = _matching_branches(tool_type, profile, math=False)
            assert len(matches) == 1, (tool_type, profile, matches)
            assert resolve(tool_type, profile).branch_id == matches[0]


@pytest.mark.parametrize("tool_type", UNVERSIONED)
def test_unversioned_tools_resolve_to_their_bare_name(tool_type: str) -> None:
    resolution = resolve(tool_type, Profile("A", 100, 30))
    assert (resolution.tool, resolution.rule_id) == (tool_type, None)


def test_every_rule_target_is_a_real_tool_name() -> None:
    names = {name for tool in TOOL_TYPES for name in tool.names}
    assert all(branch.tool in names for rule in RULES for branch in rule.branches)


@pytest.mark.parametrize("account, credits, age, expected", OVERRIDE_OCR_TABLE)
def test_override_reverses_ocr_as_in_the_paper(account: str, credits: int, age: int, expected: str) -> None:
    overridden = apply_override(RULES, override_rules(RULES, ["OCR"]))
    assert resolve("OCR", Profile(account, credits, age), rules=overridden).tool == expected


def test_override_keeps_mathocr_and_other_tools() -> None:
    updates = override_rules(RULES, ["OCR"])
    assert [rule.rule_id for rule in updates] == ["R4", "R5", "R6"]
    overridden = apply_override(RULES, updates)
    assert resolve("OCR", Profile("A", 900, 30), image_has_math=True, rules=overridden).tool == "MathOCR"
    assert resolve("CountGivenObject", Profile("A", 100, 30), rules=overridden).tool == "CountGivenObject_v1"


def test_default_override_reverses_every_versioned_tool() -> None:
    overridden = apply_override(RULES, override_rules())
    assert resolve("CountGivenObject", Profile("A", 100, 30), rules=overridden).tool == "CountGivenObject_v4"
    assert resolve("ImageStylization", Profile("A", 100, 65), rules=overridden).tool == "ImageStylization_v1"
    assert resolve("ImageStylization", Profile("A", 100, 30), rules=overridden).tool == "ImageStylization_v2"
    assert resolve("RegionAttributeDescription", Profile("C", 100, 30), rules=overridden).tool == "RegionAttributeDescription_v2"
    assert resolve("ImageDescription", Profile("A", 0, 30), rules=overridden).tool == "ImageDescription_v1"


def test_override_block_lists_the_updated_rules() -> None:
    block = render_override_block(override_rules(RULES, ["OCR"]))
    assert block.startswith(OVERRIDE_HEADER + "\nSome rules are updated as follows:\n")
    assert "Rule 4: If credits <= 250, call OCR_v1." in block
    assert "Rule 5: If 250 < credits <= 750: call OCR_v2 if account_type is A or B; otherwise call OCR_v3." in block
    assert "Rule 6: If credits > 750: call OCR_v4 if age < 21; otherwise call OCR_v5." in block
    assert "Rule 7" not in block


def test_policy_document_lists_tools_arguments_rules_and_tips() -> None:
    policy = render_policy()
    for tool in TOOL_TYPES:
        assert f"## {tool.name} ##" in policy
        assert all(name in policy for name in tool.names)
        for arg in tool.arguments:
            need = "required" if arg.required else "optional"
            assert f"- {arg.name} (type: {arg.type}, {need}" in policy
    for number in range(1, 25):
        assert f"\nRule {number}: " in policy
    assert "default: 10" in policy and 'default: "red"' in policy and "default: true" in policy
    assert describe_rule(rule_by_id(RULES, "R2")) == (
        "Rule 2: If account_type is B or C: call ImageDescription_v4 if credits > 500; otherwise call ImageDescription_v3."
    )
    assert describe_rule(rule_by_id(RULES, "R7")) == (
        "Rule 7: If the image contains math expressions, call MathOCR instead of any OCR version."
    )
    assert "k=1 if the question is not open-ended; otherwise use k=4" in policy


def test_tool_catalogue_matches_the_reference() -> None:
    versions = {tool.name: tool.versions for tool in TOOL_TYPES}
    assert versions == {
        "Calculator": 0, "OCR": 5, "CountGivenObject": 4, "ImageDescription": 5, "GoogleSearch": 3,
        "RegionAttributeDescription": 2, "TextToBbox": 0, "Plot": 0, "MathOCR": 0, "Solver": 0,
        "DrawBox": 0, "AddText": 0, "TextToImage": 3, "ImageStylization": 3,
    }
    arguments = {tool.name: [(a.name, a.required) for a in tool.arguments] for tool in TOOL_TYPES}
    assert arguments["GoogleSearch"] == [("query", True), ("k", False)]
    assert arguments["AddText"] == [("image", True), ("text", True), ("position", True), ("color", False)]
    assert arguments["RegionAttributeDescription"] == [("image", True), ("bbox", True), ("attribute", True)]
    assert arguments["TextToBbox"] == [("image", True), ("text", True), ("top1", False)]
    assert arguments["DrawBox"] == [("image", True), ("bbox", True), ("annotation", False)]
