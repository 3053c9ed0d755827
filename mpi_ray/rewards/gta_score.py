"""GTAPolicy tool-call scoring, shared by evaluation and the RL reward (paper App. C.3).

    tool    = 1 if the predicted name equals the gold name, version included, else 0
    args    = sum of per-argument scores / (number of gold arguments + number of extra arguments)
    overall = (tool + args) / 2;  reward (RL accuracy reward) = 0.5 * tool + 0.5 * args

Per-argument scores, by argument name (tools.ARG_METRICS): exact match (image, position, color, k,
top1; strings compared without whitespace, case kept), text similarity (attribute, text, query,
command, annotation, keywords, instruction; cosine of sentence embeddings clipped at 0), arithmetic
equivalence (expression; our own AST evaluator, never eval), IoU (bbox).

Choices the paper leaves open:
- wrong tool type (e.g. ImageDescription for RegionAttributeDescription): tool 0 and args 0, since
  arguments of another tool are not comparable. Right type, wrong version (OCR_v3 for OCR_v1): tool 0,
  arguments scored as usual.
- missing argument: scores 0, unless the tool declares it optional and the gold value is its default
  (omitting top1 when the gold says top1=true is the same call).
- extra argument (predicted, not in gold): adds 1 to the denominator, unless it is a declared optional
  argument set to its default. So padding a call with guesses costs score.
- wrongly typed argument (JSON type differs from the gold's: "k": "4" for 4, "top1": "true" for true,
  4.0 for 4, a list for a bbox string): 0.
- output that is not a tool call (no parsable JSON object with a string "name"; bytes that are not
  UTF-8; text over MAX_OUTPUT_CHARS): everything 0. "arguments" that is not an object: args 0.
- a string argument over MAX_ARGUMENT_CHARS or with unpaired surrogates: 0.

The prediction is the raw model output: the content of its last \\boxed{} if there is one, else the
whole text (a surrounding ``` fence is dropped). Nothing here raises on any predicted input, and the
work is bounded by the size limits; nothing the model writes (expression, command) is ever run.
"""

from __future__ import annotations

import json
import math
import re
import string
from dataclasses import dataclass
from typing import Any

from mpi_ray.data.gta_policy.tools import ARG_METRICS, EXACT, EXPRESSION, IOU, TEXT, TOOLS_BY_NAME, tool_type_of
from mpi_ray.rewards.boxed import extract_boxed
from mpi_ray.rewards.safe_math import expressions_equivalent
from mpi_ray.rewards.text_similarity import Similarity, sentence_similarity

MAX_OUTPUT_CHARS = 65_536
MAX_ARGUMENT_CHARS = 8_192
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] | None  # None: present but not a JSON object


def _scores(tool: float, args: float) -> dict[str, float]:
    return {"tool": tool, "args": args, "overall": (tool + args) / 2, "reward": 0.5 * tool + 0.5 * args}


def parse_tool_call(predicted: object) -> ToolCall | None:
    """The tool call in a raw model output, or None if there is none."""
    if isinstance(predicted, (bytes, bytearray)):
        if len(predicted) > 4 * MAX_OUTPUT_CHARS:
            return None
        try:
            predicted = bytes(predicted).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(predicted, str) or len(predicted) > MAX_OUTPUT_CHARS:
        return None
    payload = extract_boxed(predicted, MAX_OUTPUT_CHARS)
    payload = _without_fence((predicted if payload is None else payload).strip())
    try:
        call = json.loads(payload)
    except (ValueError, RecursionError, MemoryError):  # JSONDecodeError is a ValueError; so is a 5000-digit int
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = call.get("arguments", {})
    return ToolCall(call["name"], arguments if isinstance(arguments, dict) else None)


def _without_fence(payload: str) -> str:
    """```json ... ``` -> the inside; plain string operations, so the cost stays linear."""
    if len(payload) < 6 or not (payload.startswith("```") and payload.endswith("```")):
        return payload
    inner = payload[3:-3]
    language = len(inner) - len(inner.lstrip(string.ascii_letters))
    return inner[language:].strip()


def _clean_text(value: str) -> bool:
    if len(value) > MAX_ARGUMENT_CHARS:
        return False
    try:
        value.encode("utf-8")  # json.loads lets unpaired surrogates through; tokenizers reject them
    except UnicodeEncodeError:
        return False
    return True


def _same_json_type(predicted: Any, gold: Any) -> bool:
    """bool, int, float, str, list, dict, null are distinct (True is not 1, 4.0 is not 4)."""
    return type(predicted) is type(gold)


def parse_bbox(value: str) -> tuple[float, float, float, float] | None:
    numbers = _NUMBER.findall(value)
    if len(numbers) != 4:
        return None
    x1, y1, x2, y2 = (float(n) for n in numbers)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def bbox_iou(predicted: str, gold: str) -> float:
    a, b = parse_bbox(predicted), parse_bbox(gold)
    if a is None or b is None:
        return 0.0
    if a == b:
        return 1.0
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if not math.isfinite(union) or union <= 0 or not math.isfinite(inter):
        return 0.0
    return min(1.0, max(0.0, inter / union))


def _exact(predicted: Any, gold: Any) -> float:
    if isinstance(gold, str):
        return float("".join(predicted.split()) == "".join(gold.split()))
    return float(predicted == gold)


def score_argument(name: str, predicted: Any, gold: Any, similarity: Similarity | None) -> float:
    """One argument's score in [0, 1]; `similarity` None loads the default sentence model on first use."""
    if not _same_json_type(predicted, gold):
        return 0.0
    if isinstance(predicted, str) and not _clean_text(predicted):
        return 0.0
    metric = ARG_METRICS.get(name, TEXT if isinstance(gold, str) else EXACT)
    if metric == EXACT or not isinstance(gold, str):
        return _exact(predicted, gold)
    if metric == EXPRESSION:
        return float(expressions_equivalent(predicted, gold))
    if metric == IOU:
        return bbox_iou(predicted, gold)
    score = (similarity or sentence_similarity())(predicted, gold)
    return min(1.0, max(0.0, score)) if math.isfinite(score) else 0.0


def _is_default(tool_type: str, name: str, value: Any) -> bool:
    tool = TOOLS_BY_NAME.get(tool_type)
    spec = tool.argument(name) if tool else None
    if spec is None or spec.required or spec.default is None:
        return False
    return _same_json_type(value, spec.default) and value == spec.default


def argument_score(
    predicted: dict[str, Any], gold: dict[str, Any], tool_type: str, similarity: Similarity | None
) -> float:
    total = 0.0
    for name, gold_value in gold.items():
        if name in predicted:
            total += score_argument(name, predicted[name], gold_value, similarity)
        elif _is_default(tool_type, name, gold_value):
            total += 1.0
    extras = [name for name, value in predicted.items() if name not in gold and not _is_default(tool_type, name, value)]
    denominator = len(gold) + len(extras)
    return 1.0 if denominator == 0 else total / denominator


def _gold_call(gold: dict[str, Any] | str) -> ToolCall:
    """The gold is trusted data: a malformed gold is a bug in the dataset, so it raises."""
    call = json.loads(gold) if isinstance(gold, str) else gold
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not isinstance(call.get("arguments", {}), dict):
        raise ValueError(f"gold tool call must be {{'name': str, 'arguments': dict}}, got {gold!r}")
    return ToolCall(call["name"], call.get("arguments", {}))


def score_tool_call(
    predicted_text: str | bytes, gold: dict[str, Any] | str, similarity: Similarity | None = None
) -> dict[str, float]:
    """{tool, args, overall, reward} for one raw model output against the gold call (a dict or its JSON)."""
    gold_call = _gold_call(gold)
    call = parse_tool_call(predicted_text)
    if call is None:
        return _scores(0.0, 0.0)
    tool = float(call.name == gold_call.name)
    gold_type = tool_type_of(gold_call.name)
    if call.arguments is None or tool_type_of(call.name) != gold_type:
        return _scores(tool, 0.0)
    return _scores(tool, argument_score(call.arguments, gold_call.arguments or {}, gold_type, similarity))
