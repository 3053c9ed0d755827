"""(task, profile) pairs -> the train / test / override splits on disk, with the manifest.

The override split is the test split again, with the override block prepended to the policy and
every answer re-resolved under the updated rules.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from mpi_ray.data.gta_policy.instances import Task, build_record, resolve_task
from mpi_ray.data.gta_policy.policy_doc import describe_condition, render_override_block, render_policy
from mpi_ray.data.gta_policy.rules import (
    DEFAULT_OVERRIDE_TOOLS,
    RULES,
    Profile,
    apply_override,
    branch_conditions,
    branch_ids,
    override_rules,
    rule_by_id,
    tip_ids,
)
from mpi_ray.data.shards import write_manifest, write_shards

Pairs = list[tuple[Task, Profile]]


def build_splits(
    train: Pairs, test: Pairs, id_prefix: str, override_tools: Iterable[str] = DEFAULT_OVERRIDE_TOOLS
) -> dict[str, list[dict[str, Any]]]:
    """Records of the three splits; sample ids are "<id_prefix>-<split>-NNNNN"."""
    policy = render_policy(RULES)
    updates = override_rules(RULES, override_tools)
    overridden = apply_override(RULES, updates)
    block = render_override_block(updates)

    def records(split: str, pairs: Pairs) -> list[dict[str, Any]]:
        return [
            build_record(resolve_task(task, profile, RULES), RULES, sample_id=f"{id_prefix}-{split}-{i:05d}",
                         split=split, policy_text=policy)
            for i, (task, profile) in enumerate(pairs)
        ]

    test_records = records("test", test)
    override = []
    for i, ((task, profile), original) in enumerate(zip(test, test_records)):
        resolved = resolve_task(task, profile, overridden)
        extra = {
            "source_sample_id": original["sample_id"],
            "override_changed": resolved.resolution.tool != json.loads(original["answer"])["name"],
            "override_block": block,
        }
        override.append(build_record(resolved, overridden, sample_id=f"{id_prefix}-override-{i:05d}", split="override",
                                     policy_text=block + "\n" + policy, extra_meta=extra))
    return {"train": records("train", train), "test": test_records, "override": override}


def coverage(splits: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """Instances per rule branch (rules 1-20) and per tip (21-24), per split."""
    table = {row: {split: 0 for split in splits} for row in branch_ids(RULES) + tip_ids(RULES)}
    for split, rows in splits.items():
        for row in rows:
            meta = json.loads(row["meta"])
            for key in ([meta["branch_id"]] if meta["branch_id"] else []) + meta["tips"]:
                table[key][split] += 1
    return table


def coverage_markdown(table: dict[str, dict[str, int]]) -> str:
    splits = list(next(iter(table.values())))
    lines = [f"| rule | condition (original policy) | calls | {' | '.join(splits)} |",
             "|---|---|---|" + "---|" * len(splits)]
    tips = tip_ids(RULES)
    for row, counts in table.items():
        if row in tips:
            condition, tool = rule_by_id(RULES, row).text, "(tip)"
        else:
            branch, clauses = branch_conditions(RULES, row)
            condition, tool = describe_condition(clauses), branch.tool
        lines.append(f"| {row} | {condition} | {tool} | {' | '.join(str(counts[s]) for s in splits)} |")
    return "\n".join(lines)


def distributions(splits: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, int]]]:
    tools, cases = {}, {}
    for split, rows in splits.items():
        metas = [json.loads(row["meta"]) for row in rows]
        tools[split] = dict(sorted(Counter(json.loads(row["answer"])["name"] for row in rows).items()))
        cases[split] = dict(sorted(Counter(meta["case"] for meta in metas).items()))
    return {"tool_distribution": tools, "case_distribution": cases}


def write_dataset(out: str | Path, splits: dict[str, list[dict[str, Any]]], info: dict[str, Any]) -> dict[str, Any]:
    """Shards per split plus manifest.json (counts, coverage table, tool and case distributions)."""
    for split, rows in splits.items():
        write_shards(rows, out, split)
    table = coverage(splits)
    changed = sum(json.loads(row["meta"])["override_changed"] for row in splits["override"])
    manifest = {
        "dataset": "gta_policy",
        **info,
        "counts": {split: len(rows) for split, rows in splits.items()},
        "override_changed": changed,
        "coverage": table,
        "coverage_markdown": coverage_markdown(table),
        **distributions(splits),
    }
    write_manifest(out, manifest)
    return manifest
