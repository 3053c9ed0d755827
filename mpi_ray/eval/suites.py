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
from mpi_ray.data.encode import BadSample, Encoder
from mpi_ray.data.formats import with_format_instruction
from mpi_ray.data.prompts import conversation
from mpi_ray.data.shards import read_split, shard_paths

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


def suite_rows(data_dir: str, suites: list[str], limit: int | None, general_jsonl: str | None,
               policy_split: str = "test") -> dict[str, list[dict[str, Any]]]:
    """The samples each generation suite runs on; a suite whose split the data lacks is left out.
    `policy_split` ("test" or "val") is where policy_free and in_context read their questions."""
    if policy_split != "test" and not has_split(data_dir, policy_split):
        raise ValueError(f"eval.split={policy_split}, but {data_dir} has no {policy_split} split "
                         "(ClevrPolicy writes one with data.clevr.val > 0)")
    rows: dict[str, list[dict[str, Any]]] = {}
    for suite in suites:
        if suite not in GENERATION_SUITES:
            continue
        split = GENERATION_SUITES[suite][0]
        if split == "test":
            split = policy_split
        if suite == "forgetting" and general_jsonl:
            rows[suite] = spread(general_jsonl_rows(general_jsonl), limit)
        elif has_split(data_dir, split):
            rows[suite] = spread(read_split(data_dir, split), limit)
    return rows


class PromptBuilder:
    """Chat-template text + PNG images of a sample, with or without its policy, after the processor
    has taken it within `max_tokens` (the engine's context less the response budget). A prompt that
    cannot be served (too long, an image the processor refuses) raises BadSample, so its sample is
    skipped and counted instead of failing the engine's whole batch."""

    def __init__(self, model_path: str, max_tokens: int, min_pixels: int | None = None, max_pixels: int | None = None):
        self.encoder = Encoder(model_path, min_pixels, max_pixels, max_seq_len=max_tokens)

    def __call__(self, sample: dict[str, Any], with_policy: bool) -> tuple[str, list[bytes], int]:
        """(chat text, PNG images in placeholder order, exact prompt tokens)."""
        _, images = conversation(sample, with_policy, target=None)
        checked = self.encoder.checked_prompt(sample, with_policy)
        return checked["prompt"], images, checked["tokens"]


def model_context(model_path: str) -> int:
    """Positions the model takes (text config), the most any prompt + response can use."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, **({"local_files_only": True} if Path(model_path).is_dir() else {}))
    return int(getattr(config, "text_config", config).max_position_embeddings)


def build_requests(model_path: str, rows: dict[str, list[dict[str, Any]]], efficiency_samples: int | None,
                   max_prompt_tokens: int, min_pixels: int | None = None,
                   max_pixels: int | None = None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Generation requests for every suite's rows, plus prefill requests for the efficiency suite
    (the first `efficiency_samples` usable test rows; None: no efficiency suite), and the skipped
    request ids with their reasons. Skipped rows are removed from `rows`."""
    build = PromptBuilder(model_path, max_prompt_tokens, min_pixels, max_pixels)  # the engines' bounds
    requests, skipped = [], {}
    for suite, samples in rows.items():
        with_policy = GENERATION_SUITES[suite][1]
        kept = []
        for sample in samples:
            request_id = f"{suite}/{sample['sample_id']}"
            try:
                prompt, images, tokens = build(sample, with_policy)
            except BadSample as exc:
                skipped[request_id] = exc.reason
                continue
            kept.append(sample)
            requests.append({"request_id": request_id, "mode": "generate", "prompt": prompt, "images": images,
                             "policy_prompt": None, "policy_images": None, "tokens": tokens})
        samples[:] = kept
    for sample in (rows.get("policy_free") or rows.get("in_context") or [])[: efficiency_samples or 0]:
        try:
            free, free_images, free_tokens = build(sample, False)
            aware, aware_images, aware_tokens = build(sample, True)
        except BadSample as exc:
            skipped[f"efficiency/{sample['sample_id']}"] = exc.reason
            continue
        requests.append({"request_id": f"efficiency/{sample['sample_id']}", "mode": "prefill", "prompt": free,
                         "images": free_images, "policy_prompt": aware, "policy_images": aware_images,
                         "tokens": max(free_tokens, aware_tokens)})
    return requests, skipped
