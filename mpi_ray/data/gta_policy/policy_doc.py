"""Renders the GTAPolicy document and the "Tool Calling Rule Override" block from the tool and rule data."""

from __future__ import annotations

import json
from typing import Iterable

from mpi_ray.data.gta_policy.rules import RULES, Clause, Condition, Rule
from mpi_ray.data.gta_policy.tools import TOOL_TYPES, ToolType

POLICY_NAME = "GTAPolicy"
OVERRIDE_HEADER = "### Tool Calling Rule Override ###"

_INTRO = (
    "You are a multimodal assistant that solves the user's request by calling tools, one tool call per "
    "step. This policy describes the available tools and the rules that decide which tool, and which "
    "version of it, to call for each user. A tool call is one JSON object: "
    '{"name": "<Tool>_vK", "arguments": {...}}; a tool without versions is called by its bare name.'
)
_RULES_INTRO = (
    "The version of a tool depends on the user profile: account_type (A, B, C or D), credits and age. "
    "Always call exactly the version that these rules give for the user's profile."
)
_LOWER_OPS = {">": "<", ">=": "<="}  # "credits > 250" read from the left: "250 < credits"


def describe_clause(clause: Clause) -> str:
    if clause.field == "image_has_math":
        return "the image contains math expressions" if clause.value else "the image contains no math expressions"
    if clause.op == "in":
        values = list(clause.value)
        listed = values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"
        return f"{clause.field} is {listed}"
    return f"{clause.field} {clause.op} {clause.value}"


def describe_condition(condition: Condition) -> str:
    """A conjunction in words; a lower and an upper bound on one field read as "250 < credits <= 750"."""
    parts: list[str] = []
    clauses = list(condition)
    while clauses:
        clause = clauses.pop(0)
        upper = next((c for c in clauses if c.field == clause.field and c.op in ("<", "<=")), None)
        if clause.op in _LOWER_OPS and upper is not None:
            clauses.remove(upper)
            parts.append(f"{clause.value} {_LOWER_OPS[clause.op]} {clause.field} {upper.op} {upper.value}")
        else:
            parts.append(describe_clause(clause))
    return " and ".join(parts)


def rule_number(rule: Rule) -> int:
    return int(rule.rule_id[1:])


def describe_rule(rule: Rule) -> str:
    head = f"Rule {rule_number(rule)}: "
    if rule.is_tip:
        return head + rule.text
    condition = describe_condition(rule.when)
    if len(rule.branches) == 1:
        instead = f" instead of any {rule.tool_type} version" if rule.tests_image_content else ""
        return f"{head}If {condition}, call {rule.branches[0].tool}{instead}."
    cases = [
        f"call {branch.tool} if {describe_condition(branch.when)}" if branch.when else f"otherwise call {branch.tool}"
        for branch in rule.branches
    ]
    return f"{head}If {condition}: {'; '.join(cases)}."


def describe_tool(tool: ToolType) -> str:
    lines = [f"## {tool.name} ##"]
    if tool.versions:
        lines.append(f"Versions: {', '.join(tool.names)} (the tool calling rules decide the version).")
    else:
        lines.append(f"Name: {tool.name} (a single version).")
    lines.append(f"Description: {tool.description}")
    lines.append("Arguments:")
    for arg in tool.arguments:
        need = "required" if arg.required else "optional"
        if arg.default is not None:
            need += f", default: {json.dumps(arg.default)}"
        lines.append(f"- {arg.name} (type: {arg.type}, {need}): {arg.description}")
    return "\n".join(lines)


def render_rules(rules: Iterable[Rule]) -> list[str]:
    """Version rules grouped under their tool type, in rule order."""
    lines: list[str] = []
    current: str | None = None
    for rule in rules:
        if rule.is_tip:
            continue
        if rule.tool_type != current:
            current = rule.tool_type
            lines.append(f"## {current} ##")
        lines.append(describe_rule(rule))
    return lines


def render_policy(rules: Iterable[Rule] = RULES) -> str:
    """The whole policy document a model reads in context: tools, rules, tips."""
    rules = tuple(rules)
    sections = [
        f"--- Policy: {POLICY_NAME} ---",
        _INTRO,
        "### Tool Descriptions ###",
        "\n\n".join(describe_tool(tool) for tool in TOOL_TYPES),
        "### Tool Calling Rules ###",
        _RULES_INTRO,
        "\n".join(render_rules(rules)),
        "### Additional Tips ###",
        "\n".join(describe_rule(rule) for rule in rules if rule.is_tip),
        "---",
    ]
    return "\n\n".join(sections) + "\n"


def render_override_block(updates: Iterable[Rule]) -> str:
    """The block prepended to the policy in the override split; it lists only the updated rules."""
    lines = [OVERRIDE_HEADER, "Some rules are updated as follows:", *render_rules(updates)]
    lines.append("Each updated rule replaces the rule with the same number; all other rules stay as they are.")
    return "\n".join(lines) + "\n"
