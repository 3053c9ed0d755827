"""Rewards as Ray tasks: the producer scores a step's samples off its own process, a chunk per task."""

from __future__ import annotations

from typing import Any

import ray

from mpi_ray.config.schema import RewardConfig
from mpi_ray.rewards.combine import score_response


def _score(items: list[dict[str, Any]], cfg: RewardConfig) -> list[list[dict[str, float]]]:
    """items: {dataset, answer, truth, texts}; per item, {reward, accuracy, format} of each text."""
    return [[score_response(item["dataset"], text, item["answer"], item["truth"], cfg) for text in item["texts"]]
            for item in items]


score_task = ray.remote(num_cpus=0.5)(_score)


def score_in_tasks(items: list[dict[str, Any]], cfg: RewardConfig, chunks: int) -> list[list[dict[str, float]]]:
    """Score items in up to `chunks` parallel Ray tasks; results in item order."""
    size = max(1, -(-len(items) // max(1, chunks)))
    refs = [score_task.remote(items[i: i + size], cfg) for i in range(0, len(items), size)]
    return [scores for chunk in ray.get(refs) for scores in chunk]
