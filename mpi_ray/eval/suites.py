"""The evaluation suites: which rows, which prompt, how a response is scored.

    policy_free   test split, prompt (Q, I): the MPI setting
    in_context    test split, prompt (P, I, Q): the in-context baseline (and Table 4 after MPI)
    override      override split, the NEW policy in context (ClevrPolicy: same name, new tree;
                  GTAPolicy: the rule-override block); scored against the new policy's answer
    referral      the policy_free responses' reasoning against the gold path (no extra generation)
    efficiency    prompt tokens and time to first token with vs without the policy
    forgetting    general questions outside MPI (the data's `general` split, or eval.general_jsonl)

Prompts are built by the one prompt builder (mpi_ray.data.prompts) with the model's chat template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mpi_ray.data.clevr_policy.general import GENERAL_DATASET
from mpi_ray.data.formats import with_format_instruction
from mpi_ray.data.prompts import conversation
from mpi_ray.data.shards import read_split, shard_paths
from mpi_ray.model.loading import load_processor

GENERATION_SUITES = {"policy_free": ("test", False), "in_context": ("test", True), "override": ("override", True),
                     "forgetting": ("general", False)}


def spread(rows: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """At most `limit` rows, evenly spaced over the split (splits are written leaf/case-balanced in order)."""
    if limit is None or len(rows) <= limit:
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def general_jsonl_rows(path: str) -> list[dict[str, Any]]:
    """A user-supplied forgetting benchmark: one JSON object a line,
    {"id": str, "question": str, "answer": str, "images": [image file paths, relative to the file]};
    scored by exact match of the last \\boxed{} with `answer`."""
    base = Path(path).parent
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        item = json.loads(line)
        rows.append({"sample_id": str(item.get("id", number)), "dataset": GENERAL_DATASET, "split": "general",
                     "policy_name": "", "policy_text": "", "policy_images": [],
                     "images": [(base / image).read_bytes() for image in item.get("images", [])],
                     "query": with_format_instruction(item["question"]), "answer": str(item["answer"]),
                     "truth": "{}", "meta": "{}", "cot": None})
    return rows


def has_split(data_dir: str, split: str) -> bool:
    try:
        return bool(shard_paths(data_dir, split))
    except FileNotFoundError:
        return False


def suite_rows(data_dir: str, suites: list[str], limit: int | None, general_jsonl: str | None) -> dict[str, list[dict[str, Any]]]:
    """The samples each generation suite runs on; a suite whose split the data lacks is left out."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for suite in suites:
        if suite not in GENERATION_SUITES:
            continue
        split = GENERATION_SUITES[suite][0]
        if suite == "forgetting" and general_jsonl:
            rows[suite] = spread(general_jsonl_rows(general_jsonl), limit)
        elif has_split(data_dir, split):
            rows[suite] = spread(read_split(data_dir, split), limit)
    return rows


class PromptBuilder:
    """Chat-template text + PNG images of a sample, with or without its policy."""

    def __init__(self, model_path: str):
        self.processor = load_processor(model_path)

    def __call__(self, sample: dict[str, Any], with_policy: bool) -> tuple[str, list[bytes]]:
        messages, images = conversation(sample, with_policy, target=None)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True), images


def build_requests(model_path: str, rows: dict[str, list[dict[str, Any]]], efficiency_samples: int | None) -> list[dict[str, Any]]:
    """Generation requests for every suite's rows, plus prefill requests for the efficiency suite
    (the first `efficiency_samples` test rows; None: no efficiency suite)."""
    build = PromptBuilder(model_path)
    requests = []
    for suite, samples in rows.items():
        with_policy = GENERATION_SUITES[suite][1]
        for sample in samples:
            prompt, images = build(sample, with_policy)
            requests.append({"request_id": f"{suite}/{sample['sample_id']}", "mode": "generate",
                             "prompt": prompt, "images": images, "policy_prompt": None, "policy_images": None})
    for sample in (rows.get("policy_free") or rows.get("in_context") or [])[: efficiency_samples or 0]:
        free, free_images = build(sample, False)
        aware, aware_images = build(sample, True)
        requests.append({"request_id": f"efficiency/{sample['sample_id']}", "mode": "prefill", "prompt": free,
                         "images": free_images, "policy_prompt": aware, "policy_images": aware_images})
    return requests
