"""A GTAPolicy instance: a single-turn tool-calling task, and how it becomes one sample record.

A Task is profile-free: its steps name tool *types*. A profile and a rule set turn it into a record:
every step (history and target) is re-named to the version the rules give for that profile, so the
same Task yields the test sample under the policy and the override sample under the updated rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from mpi_ray.data.gta_policy.cot import build_cot
from mpi_ray.data.gta_policy.policy_doc import POLICY_NAME
from mpi_ray.data.gta_policy.rules import (
    TIP_BBOX_FIRST,
    TIP_IMAGE_NAMES,
    TIP_MULTI_IMAGE,
    TIP_SEARCH_K,
    Profile,
    Resolution,
    Rule,
    resolve,
)
from mpi_ray.data.formats import with_format_instruction
from mpi_ray.data.schema import make_sample

DATASET = "gta_policy"
INSTRUCTION = (
    "You are a helpful assistant that solves the user's request by calling tools. Given the images, the user "
    "profile, the user query and the interaction history so far, you need to determine the appropriate tool to "
    "use at the current step, following the tool calling rules for this user, and give that one tool call as a "
    'JSON object {"name": "<Tool>_vK", "arguments": {...}}.'
)


@dataclass(frozen=True)
class Step:
    """One tool call by type; `result` is what the tool returned (empty for the step to predict)."""

    tool_type: str
    arguments: dict[str, Any]
    result: str = ""
    image_has_math: bool = False  # decides OCR vs MathOCR (rule 7)


@dataclass(frozen=True)
class Task:
    case: str  # single, chain, multi-image-describe, bbox-before-region, search-closed, ...
    images: tuple[bytes, ...]  # PNG bytes
    image_names: tuple[str, ...]  # "image/image_12.jpg", in the order of `images`
    query: str
    history: tuple[Step, ...]
    target: Step
    reason: str  # why this tool with these arguments now; the task part of the CoT
    tips: tuple[str, ...] = ()  # tips the scenario relies on beyond those inferred from the target
    source: dict[str, Any] = field(default_factory=dict)  # provenance (GTA query id, step) for meta


@dataclass(frozen=True)
class ResolvedTask:
    task: Task
    profile: Profile
    history_names: tuple[str, ...]
    resolution: Resolution

    @property
    def gold(self) -> dict[str, Any]:
        return tool_call(self.resolution.tool, self.task.target.arguments)


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def call_json(call: dict[str, Any]) -> str:
    return json.dumps(call, ensure_ascii=False)


def resolve_task(task: Task, profile: Profile, rules: Iterable[Rule]) -> ResolvedTask:
    rules = tuple(rules)
    history = tuple(resolve(s.tool_type, profile, s.image_has_math, rules).tool for s in task.history)
    target = resolve(task.target.tool_type, profile, task.target.image_has_math, rules)
    return ResolvedTask(task, profile, history, target)


def applicable_tips(task: Task) -> list[str]:
    """The tips that decide the target step: the scenario's own plus those its target implies."""
    tips = set(task.tips)
    target = task.target
    if target.tool_type == "ImageDescription" and len(task.image_names) > 1:
        tips.add(TIP_MULTI_IMAGE)
    if target.tool_type == "RegionAttributeDescription":
        tips.add(TIP_BBOX_FIRST)
    if "image" in target.arguments:
        tips.add(TIP_IMAGE_NAMES)
    if target.tool_type == "GoogleSearch":
        tips.add(TIP_SEARCH_K)
    return sorted(tips, key=lambda tip: int(tip[1:]))


def render_profile(profile: Profile) -> str:
    return f"account_type: {profile.account_type}\ncredits: {profile.credits}\nage: {profile.age}"


def render_history(resolved: ResolvedTask) -> str:
    if not resolved.task.history:
        return "No tool has been called yet."
    lines = []
    for index, (step, name) in enumerate(zip(resolved.task.history, resolved.history_names), start=1):
        lines.append(f"Step {index}: {call_json(tool_call(name, step.arguments))}")
        lines.append(f"Returned: {step.result}")
    return "\n".join(lines)


def render_query(resolved: ResolvedTask) -> str:
    """The whole user turn without the policy: instruction, images, profile, query, history, then the
    think-then-box format instruction every dataset ends its query with."""
    task = resolved.task
    body = "\n\n".join(
        [
            INSTRUCTION,
            "### Images ###\n" + "\n".join(task.image_names),
            "### User Profile ###\n" + render_profile(resolved.profile),
            "### User Query ###\n" + task.query,
            "### Interaction History ###\n" + render_history(resolved),
            f"### Current Step ###\nGive the tool call for step {len(task.history) + 1}.",
        ]
    )
    return with_format_instruction(body)


def build_record(
    resolved: ResolvedTask,
    rules: Iterable[Rule],
    *,
    sample_id: str,
    split: str,
    policy_text: str,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One sample in the shared schema; `rules` are the rules in force (for the CoT's explanation)."""
    task, resolution = resolved.task, resolved.resolution
    tips = applicable_tips(task)
    fired = ([resolution.rule_id] if resolution.rule_id else []) + tips
    meta = {
        "tool_type": task.target.tool_type,
        "case": task.case,
        "num_images": len(task.images),
        "rule_ids": fired,
        "branch_id": resolution.branch_id,
        "tips": tips,
        **task.source,
        **(extra_meta or {}),
    }
    truth = {
        "profile": resolved.profile.as_dict(),
        "gold": resolved.gold,
        "image_has_math": task.target.image_has_math,
        "history": [tool_call(n, s.arguments) for n, s in zip(resolved.history_names, task.history)],
    }
    return make_sample(
        sample_id=sample_id,
        dataset=DATASET,
        split=split,
        policy_name=POLICY_NAME,
        policy_text=policy_text,
        images=list(task.images),
        image_names=list(task.image_names),
        query=render_query(resolved),
        cot=build_cot(resolved, tuple(rules), tips),
        answer=call_json(resolved.gold),
        truth=truth,
        meta=meta,
    )
