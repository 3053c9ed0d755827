"""The 24 tool-calling rules of GTAPolicy as data, the resolver, and the Policy Override rules.

Rules 1-20 pick a tool version from the user profile (and, for MathOCR, from the image content);
rules 21-24 are the four tips. A rule holds an outer condition and one or more branches; the first
branch whose condition holds names the tool to call (an empty condition means "otherwise").
Each branch has an id ("R5a", "R5b"; "R4" for a one-branch rule) used in the coverage table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

from mpi_ray.data.gta_policy.tools import TOOLS_BY_NAME, VERSIONED_TOOLS, tool_type_of, version_of, versioned_name

ACCOUNT_TYPES = ("A", "B", "C", "D")
CREDIT_THRESHOLDS = (250, 500, 750)
AGE_THRESHOLDS = (21, 60)


@dataclass(frozen=True)
class Profile:
    account_type: str  # A | B | C | D
    credits: int
    age: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Clause:
    """One test of one field: credits > 500, account_type in (B, C), image_has_math is True."""

    field: str  # account_type | credits | age | image_has_math (the one image-content fact, rule 7)
    op: str  # "in" | "<" | "<=" | ">" | ">=" | "is"
    value: Any

    def holds(self, facts: dict[str, Any]) -> bool:
        actual = facts[self.field]
        if self.op == "in":
            return actual in self.value
        if self.op == "is":
            return actual is self.value
        if self.op == "<":
            return actual < self.value
        if self.op == "<=":
            return actual <= self.value
        if self.op == ">":
            return actual > self.value
        if self.op == ">=":
            return actual >= self.value
        raise ValueError(f"unknown operator {self.op!r} in {self}")


Condition = tuple[Clause, ...]  # a conjunction; () always holds


@dataclass(frozen=True)
class Branch:
    when: Condition  # () = otherwise
    tool: str  # the full name to call: "OCR_v4", "MathOCR"


@dataclass(frozen=True)
class Rule:
    rule_id: str  # "R1".."R24"
    tool_type: str | None  # None for the four tips
    when: Condition
    branches: tuple[Branch, ...] = ()
    text: str = ""  # the wording of a tip; version rules are rendered from their clauses

    @property
    def is_tip(self) -> bool:
        return self.tool_type is None

    @property
    def tests_image_content(self) -> bool:
        return any(clause.field == "image_has_math" for clause in self.when)

    def branch_id(self, index: int) -> str:
        return self.rule_id if len(self.branches) == 1 else f"{self.rule_id}{'abcdefgh'[index]}"


@dataclass(frozen=True)
class Resolution:
    """Which name to call, and which rule branch said so (None for unversioned tools)."""

    tool: str
    rule_id: str | None
    branch_id: str | None


def account(*types: str) -> Clause:
    return Clause("account_type", "in", tuple(types))


def credits(op: str, value: int) -> Clause:
    return Clause("credits", op, value)


def age(op: str, value: int) -> Clause:
    return Clause("age", op, value)


def _rule(rule_id: str, tool_type: str, when: Condition, *branches: tuple[Condition, int | str]) -> Rule:
    built = tuple(
        Branch(cond, target if isinstance(target, str) else versioned_name(tool_type, target))
        for cond, target in branches
    )
    return Rule(rule_id, tool_type, when, built)


OTHERWISE: Condition = ()
IMAGE_HAS_MATH = Clause("image_has_math", "is", True)

RULES: tuple[Rule, ...] = (
    _rule("R1", "ImageDescription", (account("A"),), (OTHERWISE, 5)),
    _rule("R2", "ImageDescription", (account("B", "C"),), ((credits(">", 500),), 4), (OTHERWISE, 3)),
    _rule("R3", "ImageDescription", (account("D"),), ((credits(">", 500),), 2), (OTHERWISE, 1)),
    _rule("R4", "OCR", (credits("<=", 250),), (OTHERWISE, 5)),
    _rule("R5", "OCR", (credits(">", 250), credits("<=", 750)), ((account("A", "B"),), 4), (OTHERWISE, 3)),
    _rule("R6", "OCR", (credits(">", 750),), ((age("<", 21),), 2), (OTHERWISE, 1)),
    _rule("R7", "OCR", (IMAGE_HAS_MATH,), (OTHERWISE, "MathOCR")),
    _rule("R8", "GoogleSearch", (age("<", 21),), (OTHERWISE, 1)),
    _rule("R9", "GoogleSearch", (age(">=", 21),), ((credits("<", 500),), 2), (OTHERWISE, 3)),
    _rule("R10", "TextToImage", (account("A", "B", "C"),), (OTHERWISE, 1)),
    _rule("R11", "TextToImage", (account("D"),), ((credits(">", 500),), 2), (OTHERWISE, 3)),
    _rule("R12", "RegionAttributeDescription", (account("A", "B"),), (OTHERWISE, 2)),
    _rule("R13", "RegionAttributeDescription", (account("C", "D"),), (OTHERWISE, 1)),
    _rule("R14", "CountGivenObject", (credits("<", 250),), (OTHERWISE, 1)),
    _rule("R15", "CountGivenObject", (credits(">=", 250), credits("<", 500)), (OTHERWISE, 2)),
    _rule("R16", "CountGivenObject", (credits(">=", 500), credits("<", 750)), (OTHERWISE, 3)),
    _rule("R17", "CountGivenObject", (credits(">=", 750),), (OTHERWISE, 4)),
    _rule("R18", "ImageStylization", (age("<", 21),), (OTHERWISE, 1)),
    _rule("R19", "ImageStylization", (age(">=", 21), age("<", 60)), (OTHERWISE, 2)),
    _rule("R20", "ImageStylization", (age(">=", 60),), (OTHERWISE, 3)),
    Rule("R21", None, (), text=(
        "When the user gives several images, always call an ImageDescription tool on each image "
        "that has not been described yet before using other tools."
    )),
    Rule("R22", None, (), text=(
        "Get the bbox of a region with TextToBbox before calling a RegionAttributeDescription tool; "
        "the bbox format is (x1, y1, x2, y2)."
    )),
    Rule("R23", None, (), text=(
        'Use the exact image names such as "image/image_1.jpg" as the image arguments.'
    )),
    Rule("R24", None, (), text=(
        "For a GoogleSearch tool, use k=1 if the question is not open-ended; otherwise use k=4."
    )),
)

TIP_MULTI_IMAGE, TIP_BBOX_FIRST, TIP_IMAGE_NAMES, TIP_SEARCH_K = "R21", "R22", "R23", "R24"


def facts(profile: Profile, image_has_math: bool = False) -> dict[str, Any]:
    return {**profile.as_dict(), "image_has_math": image_has_math}


def rule_by_id(rules: Iterable[Rule], rule_id: str) -> Rule:
    for rule in rules:
        if rule.rule_id == rule_id:
            return rule
    raise KeyError(rule_id)


def rules_for(rules: Iterable[Rule], tool_type: str) -> list[Rule]:
    """The version rules of one tool type, content rules (MathOCR) first because they take precedence."""
    own = [rule for rule in rules if rule.tool_type == tool_type]
    return sorted(own, key=lambda rule: not rule.tests_image_content)


def resolve(
    tool_type: str, profile: Profile, image_has_math: bool = False, rules: Iterable[Rule] = RULES
) -> Resolution:
    """The name to call for a tool type under a profile; unversioned tools resolve to themselves."""
    candidates = rules_for(rules, tool_type)
    if not candidates:
        return Resolution(tool_type, None, None)
    known = facts(profile, image_has_math)
    for rule in candidates:
        if not all(clause.holds(known) for clause in rule.when):
            continue
        for index, branch in enumerate(rule.branches):
            if all(clause.holds(known) for clause in branch.when):
                return Resolution(branch.tool, rule.rule_id, rule.branch_id(index))
    raise ValueError(f"no rule for {tool_type} matches {profile} (image_has_math={image_has_math})")


def branch_ids(rules: Iterable[Rule] = RULES) -> list[str]:
    """Every branch id of every version rule, in rule order (rows of the coverage table)."""
    return [rule.branch_id(i) for rule in rules if not rule.is_tip for i in range(len(rule.branches))]


def tip_ids(rules: Iterable[Rule] = RULES) -> list[str]:
    return [rule.rule_id for rule in rules if rule.is_tip]


_NEGATED_OPS = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def negate(clause: Clause) -> Clause:
    if clause.op == "in" and clause.field == "account_type":
        return Clause(clause.field, "in", tuple(a for a in ACCOUNT_TYPES if a not in clause.value))
    if clause.op == "is":
        return Clause(clause.field, "is", not clause.value)
    if clause.op in _NEGATED_OPS:
        return Clause(clause.field, _NEGATED_OPS[clause.op], clause.value)
    raise ValueError(f"cannot negate {clause}")


def branch_conditions(rules: Iterable[Rule], branch_id: str) -> tuple[Branch, Condition]:
    """The branch of a branch id and the whole condition that selects it: the rule's clauses, the
    negation of each earlier branch (one clause each in this policy), and the branch's own clauses."""
    for rule in rules:
        for index, branch in enumerate(rule.branches):
            if rule.branch_id(index) != branch_id:
                continue
            earlier = rule.branches[:index]
            if any(len(b.when) != 1 for b in earlier):
                raise ValueError(f"{branch_id}: an earlier branch is not a single clause")
            return branch, rule.when + tuple(negate(b.when[0]) for b in earlier) + branch.when
    raise KeyError(branch_id)


# ---- Policy Override -------------------------------------------------------------------------

# The tools whose rules the default override block reverses: every versioned tool. The paper's example
# (§5.4) is OCR alone; reversing all of them makes the override split measure more than a few answers.
DEFAULT_OVERRIDE_TOOLS = VERSIONED_TOOLS


def reversed_rule(rule: Rule) -> Rule:
    """The same conditions with the version order reversed (v -> n + 1 - v); unversioned targets stay."""
    count = TOOLS_BY_NAME[rule.tool_type].versions if rule.tool_type else 0

    def flip(target: str) -> str:
        version = version_of(target)
        if version is None or count == 0:
            return target
        return versioned_name(tool_type_of(target), count + 1 - version)

    return dataclasses.replace(rule, branches=tuple(dataclasses.replace(b, tool=flip(b.tool)) for b in rule.branches))


def override_rules(rules: Iterable[Rule] = RULES, tool_types: Iterable[str] = DEFAULT_OVERRIDE_TOOLS) -> tuple[Rule, ...]:
    """The updated rules of an override block: each version rule of the tools, reversed.

    Rules whose targets do not change (MathOCR) are left out of the block.
    """
    rules, chosen = tuple(rules), set(tool_types)
    return tuple(
        reversed_rule(rule) for rule in rules if rule.tool_type in chosen and reversed_rule(rule) != rule
    )


def apply_override(rules: Iterable[Rule], updates: Iterable[Rule]) -> tuple[Rule, ...]:
    """The rule set in force after an override: updated rules replace the rules with the same id."""
    by_id = {rule.rule_id: rule for rule in updates}
    return tuple(by_id.get(rule.rule_id, rule) for rule in rules)
