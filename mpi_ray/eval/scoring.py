"""Evaluation scores of one response, by dataset, and their means.

    ClevrPolicy, CLEVR general  -> accuracy: exact match of the last \\boxed{} with the gold
    GTAPolicy                   -> tool (Tool Acc), arg (Arg Score), accuracy = overall = their mean
Every response also gets `format` (the reward's format check). The scores are the RL reward's own
(rewards.combine.response_scores), so like the rewards, any model output yields numbers, never an exception.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mpi_ray.config.schema import RewardConfig
from mpi_ray.rewards.combine import response_scores


def score_eval(dataset: str, text: str, answer: str, reward: RewardConfig) -> dict[str, float]:
    return response_scores(dataset, text, answer, reward)


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over rows, as a percentage (the paper's tables), plus the sample count."""
    sums: dict[str, float] = defaultdict(float)
    for row in rows:
        for key, value in row.items():
            sums[key] += value
    return {"samples": len(rows), **{key: 100.0 * total / len(rows) for key, total in sums.items()}} if rows else {"samples": 0}


def summarize_by_suite(scored: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """scored: {suite, scores} per response -> {suite: mean scores}."""
    by_suite: dict[str, list[dict[str, float]]] = defaultdict(list)
    for item in scored:
        by_suite[item["suite"]].append(item["scores"])
    return {suite: mean_scores(rows) for suite, rows in by_suite.items()}
