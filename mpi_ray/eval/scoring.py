"""Evaluation scores of one response, by dataset, and their means.

    ClevrPolicy, CLEVR general  -> accuracy: exact match of the last \\boxed{} with the gold
    GTAPolicy                   -> tool (Tool Acc), arg (Arg Score), accuracy = overall = their mean
Every response also gets `format` (the reward's format check). The scores are the RL reward's own
(rewards.combine.response_scores), so like the rewards, any model output yields numbers, never an exception.
"""

from __future__ import annotations

from collections import Counter, defaultdict
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


def _answer_kind(answer: str) -> str:
    """What a question's wording already tells: a yes/no question, a count, or anything else (a case)."""
    if answer.strip().lower() in ("yes", "no"):
        return "yes/no"
    return "number" if answer.strip().isdigit() else "other"


def constant_answer_accuracy(answers: list[str]) -> float | None:
    """Accuracy (%) of answering every question of a kind with that kind's most common gold answer: what a
    model scores that reads neither the image nor anything in the question beyond its kind. An
    exact-match accuracy at this level is no evidence of perception."""
    if not answers:
        return None
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for answer in answers:
        by_kind[_answer_kind(answer)][answer] += 1
    return 100.0 * sum(counts.most_common(1)[0][1] for counts in by_kind.values()) / len(answers)
