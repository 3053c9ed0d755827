"""ClevrPolicy accuracy reward (paper Eq. 4): 1.0 iff the content of the last \\boxed{} equals the
gold "Case k" after normalization (strip, collapse whitespace, ignore letter case), else 0.0.
So "\\boxed{ case  12 }" matches "Case 12"; "Case 012", "12" or "\\text{Case 12}" do not."""

from __future__ import annotations

from mpi_ray.rewards.boxed import extract_boxed
from mpi_ray.rewards.format import response_text


def normalize_answer(answer: str) -> str:
    return " ".join(answer.split()).casefold()


def clevr_accuracy(response: object, gold_answer: str) -> float:
    """Exact match of the last boxed answer with the gold; 0.0 for anything without one."""
    text = response_text(response)
    predicted = None if text is None else extract_boxed(text)
    if predicted is None:
        return 0.0
    return float(normalize_answer(predicted) == normalize_answer(gold_answer))
