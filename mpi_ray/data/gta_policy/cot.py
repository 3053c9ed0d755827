"""Reverse CoT targets (paper App. D.1): a rationale written from the inputs and the gold call.

The rationale says what the user wants, what has been done, which tool comes next and why, the tips
that shape the arguments, and which rule (and which branch of it) picks the version for this profile.
The result is "<think>...</think>" only; the stage code appends \\boxed{answer}.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable

from mpi_ray.data.gta_policy.policy_doc import describe_condition, describe_rule, rule_number
from mpi_ray.data.gta_policy.rules import Condition, Profile, Rule, facts, rule_by_id

if TYPE_CHECKING:
    from mpi_ray.data.gta_policy.instances import ResolvedTask

_MAX_RESULT_CHARS = 160  # long tool outputs are shortened in the summary of the history


def _values(condition: Condition, profile: Profile, image_has_math: bool) -> str:
    known = facts(profile, image_has_math)
    fields = list(dict.fromkeys(clause.field for clause in condition))
    return ", ".join(f"{name} = {known[name]}" for name in fields)


def explain_version(resolved: "ResolvedTask", rules: tuple[Rule, ...]) -> str:
    """Which rule applies to this profile and why; or why no rule is needed."""
    resolution, profile = resolved.resolution, resolved.profile
    target = resolved.task.target
    if resolution.rule_id is None:
        return f"{target.tool_type} has a single version, so no profile rule is needed: call {resolution.tool}."
    rule = rule_by_id(rules, resolution.rule_id)
    if rule.tests_image_content:
        return f"The image contains math expressions, so Rule {rule_number(rule)} applies: call {resolution.tool}."
    math = target.image_has_math
    text = (
        f"The user profile is account_type {profile.account_type}, credits {profile.credits}, age {profile.age}. "
        f"For {rule.tool_type}, Rule {rule_number(rule)} applies because {describe_condition(rule.when)} "
        f"({_values(rule.when, profile, math)})."
    )
    if len(rule.branches) == 1:
        return f"{text} So the version is {resolution.tool}."
    first = rule.branches[0]
    if resolution.tool == first.tool:
        return (
            f"{text} Within it, {describe_condition(first.when)} holds ({_values(first.when, profile, math)}), "
            f"so the version is {resolution.tool}."
        )
    return (
        f"{text} Within it, {describe_condition(first.when)} does not hold ({_values(first.when, profile, math)}), "
        f"so the otherwise case applies: {resolution.tool}."
    )


def summarize_history(resolved: "ResolvedTask") -> str:
    steps = resolved.task.history
    if not steps:
        return "No tool has been called yet."
    parts = []
    for index, (step, name) in enumerate(zip(steps, resolved.history_names), start=1):
        result = " ".join(step.result.split())
        if len(result) > _MAX_RESULT_CHARS:
            result = result[: _MAX_RESULT_CHARS - 3] + "..."
        parts.append(f'step {index} called {name}, which returned "{result}"')
    return "So far, " + "; ".join(parts) + "."


def build_cot(resolved: "ResolvedTask", rules: tuple[Rule, ...], tips: Iterable[str]) -> str:
    task = resolved.task
    tip_lines = [describe_rule(rule_by_id(rules, tip)) for tip in tips]
    sentences = [
        f"The user asks: {task.query}",
        summarize_history(resolved),
        task.reason,
        *(f"This follows {line}" for line in tip_lines),
        explain_version(resolved, rules),
        f"The call is {resolved.resolution.tool} with arguments {json.dumps(task.target.arguments, ensure_ascii=False)}.",
    ]
    return "<think>\n" + "\n".join(sentence for sentence in sentences if sentence) + "\n</think>"
