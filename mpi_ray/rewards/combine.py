"""The RL reward of one response: accuracy (by dataset) and format, combined with the config weights
(reference §4.6: 0.9 * accuracy + 0.1 * format).

    clevr_policy*  -> ClevrPolicy exact match of the last \\boxed{} (paper Eq. 4)
    clevr_general  -> the same exact match (the policy-free attribute questions)
    gta_policy*, gta -> 0.5 * ToolAcc + 0.5 * ArgScore of the tool call (paper Eq. 5)

Trusted inputs fail loudly: an unknown dataset, a gold answer that is not a tool call, or a text-
similarity model that cannot load raises. Model output never does: whatever the response holds,
the result is finite numbers, and a scorer that still fails on one is logged and scored 0 (a
reward bug must not kill a rollout step). The DAPO overlong penalty is added by the caller
(`mpi_ray.rl.overlong.shaped_reward`), which knows the response length in tokens.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

from mpi_ray.config.schema import RewardConfig
from mpi_ray.rewards.clevr import clevr_accuracy
from mpi_ray.rewards.format import format_reward, response_text
from mpi_ray.rewards.gta_score import parse_tool_call, score_tool_call
from mpi_ray.rewards.text_similarity import Similarity, sentence_similarity

log = logging.getLogger(__name__)


def _is_clevr(dataset: str) -> bool:
    return dataset.startswith("clevr_policy") or dataset == "clevr_general"


def is_gta(dataset: str) -> bool:
    return dataset == "gta" or dataset.startswith("gta_policy")


def gold_tool_call(gold_answer: str) -> dict[str, Any]:
    """The gold call of a GTAPolicy sample (its `answer` field, JSON); raises if it is not one."""
    call = parse_tool_call(gold_answer)
    if call is None or call.arguments is None:
        raise ValueError(f"gold answer is not a tool call {{'name': str, 'arguments': dict}}: {gold_answer[:200]!r}")
    return {"name": call.name, "arguments": call.arguments}


def check_gold(dataset: str, gold_answer: str) -> None:
    """Raise ValueError when no reward can score this sample: an unknown dataset, or a GTA gold that
    is not a tool call. The data path calls it per row, so such a row is skipped and counted there
    instead of raising mid-RL."""
    if is_gta(dataset):
        gold_tool_call(gold_answer)
    elif not _is_clevr(dataset):
        raise ValueError(f"no reward for dataset {dataset!r}; known: clevr_policy*, clevr_general, gta_policy*, gta")


def _accuracy_scorer(dataset: str, gold_answer: str, similarity: Similarity | None) -> Callable[[str | None], dict[str, float]]:
    """Resolve everything trusted (dataset, gold, similarity model) before any model output is seen.
    The scorer gives {accuracy}; for a tool call also {tool, arg}, the halves accuracy is the mean of."""
    if _is_clevr(dataset):
        return lambda text: {"accuracy": clevr_accuracy(text, gold_answer)}
    check_gold(dataset, gold_answer)  # an unknown dataset or a gold that is not a tool call raises here
    gold = gold_tool_call(gold_answer)
    scorer = similarity or sentence_similarity()  # loads (once per process) here, so a missing model raises

    def tool_call_scores(text: str | None) -> dict[str, float]:
        if text is None:
            return {"accuracy": 0.0, "tool": 0.0, "arg": 0.0}
        scores = score_tool_call(text, gold, similarity=scorer)
        return {"accuracy": scores["reward"], "tool": scores["tool"], "arg": scores["args"]}

    return tool_call_scores


def _bounded(score: float) -> float:
    return min(1.0, max(0.0, score)) if math.isfinite(score) else 0.0


def response_scores(
    dataset: str, response: object, gold_answer: str, cfg: RewardConfig, similarity: Similarity | None = None
) -> dict[str, float]:
    """What the reward and the evaluation both score in one response: {accuracy, format}, and for a tool
    call also {tool, arg}; each in [0, 1] whatever the response holds."""
    score_accuracy = _accuracy_scorer(dataset, gold_answer, similarity)
    text = response_text(response)
    try:
        scores = {key: _bounded(float(value)) for key, value in score_accuracy(text).items()}
        scores["format"] = _bounded(format_reward(text, cfg.format_pattern))
    except Exception as error:  # noqa: BLE001 - last resort: model output must never raise
        log.warning("reward scorer failed on a %s response (%s: %s); scored 0", dataset, type(error).__name__, error)
        # the same keys, all 0: with no text the scorers only return zeros
        scores = dict.fromkeys(score_accuracy(None), 0.0) | {"format": 0.0}
    return scores


def score_response(
    dataset: str,
    response: object,
    gold_answer: str,
    truth_json: str,
    cfg: RewardConfig,
    similarity: Similarity | None = None,
) -> dict[str, float]:
    """{reward, accuracy, format} of one response. `truth_json` (the sample's structured truth) is
    accepted for scorers that need it; ClevrPolicy and GTAPolicy score from `gold_answer` alone.
    `similarity` replaces the GTA text similarity (default: the packaged MiniLM)."""
    scores = response_scores(dataset, response, gold_answer, cfg, similarity)
    reward = cfg.accuracy_weight * scores["accuracy"] + cfg.format_weight * scores["format"]
    return {"reward": reward, "accuracy": scores["accuracy"], "format": scores["format"]}
