"""RL rewards: the format reward (and its linear matcher against the regex engine), ClevrPolicy
accuracy, the combined reward per dataset, DAPO overlong shaping, and no-raise properties."""

from __future__ import annotations

import json
import math
import time

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import HANG_GUARD_S
from mpi_ray.config.schema import OverlongConfig, RewardConfig
from mpi_ray.rewards.clevr import clevr_accuracy
from mpi_ray.rewards.combine import score_response
from mpi_ray.rewards.format import DEFAULT_PATTERN, MAX_CHARS, format_reward, literal_chain
from mpi_ray.rewards.gta_score import score_tool_call
from mpi_ray.rewards.text_similarity import token_overlap_similarity
from mpi_ray.rl.overlong import overlong_penalty, shaped_reward

CFG = RewardConfig()  # 0.9 * accuracy + 0.1 * format
COUNT = {"name": "CountGivenObject_v2", "arguments": {"image": "image/image_7.jpg", "text": "red ball"}}
GOOD_CLEVR = "<think>The red cube is large, so Condition 1 holds.</think>\nThe answer is \\boxed{Case 12}"


def boxed_call(call: dict) -> str:
    return "<think>look up the tool</think>\n\\boxed{" + json.dumps(call) + "}"


def approx(value: float) -> pytest.approx:
    return pytest.approx(value, abs=1e-9)


# ---- format ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        (GOOD_CLEVR, 1.0),
        ("<think>\nmulti\nline\n</think>\n\\boxed{x}\ntrailing", 1.0),
        ("<think></think>\\boxed{}", 1.0),
        ("<think>a</think>\\boxed{{\"name\": \"OCR_v1\"}}", 1.0),
        ("preamble <think>a</think>\\boxed{x}", 0.0),  # full match: nothing before <think>
        ("<think>a</think> Case 12", 0.0),  # no box
        ("<think>a \\boxed{x}</think> done", 0.0),  # the box must come after </think>
        ("<think>a</think>\\boxed{x", 0.0),  # unclosed box
        ("\\boxed{Case 1}", 0.0),
        ("", 0.0),
        (GOOD_CLEVR.encode(), 1.0),
        (b"\xff\xfe<think>", 0.0),
        (None, 0.0),
        (12, 0.0),
        (["<think>a</think>\\boxed{x}"], 0.0),
    ],
)
def test_format_reward(response: object, expected: float) -> None:
    assert format_reward(response) == expected


def test_default_pattern_is_a_literal_chain() -> None:
    assert literal_chain(DEFAULT_PATTERN) == ("<think>", "</think>", "\\boxed{", "}", "")
    assert literal_chain(r"<answer>\d+</answer>") is None
    assert literal_chain("no wildcard") is None


def test_other_patterns_use_the_regex_engine() -> None:
    pattern = r"<answer>\d+</answer>"
    assert format_reward("<answer>42</answer>", pattern) == 1.0
    assert format_reward("<answer>4x2</answer>", pattern) == 0.0


def test_text_over_the_cap_scores_zero() -> None:
    body = "<think>" + "x" * MAX_CHARS + "</think>\\boxed{1}"
    assert format_reward(body) == 0.0


def test_format_reward_is_linear_on_hostile_text() -> None:
    # Python's re needs about a minute on this (cubic backtracking); the literal chain is linear.
    hostile = ["<think>" + "</think>\\boxed{" * 4_000, "<think>" + "</think>" * 4_000 + "\\boxed{" * 4_000]
    started = time.perf_counter()
    assert [format_reward(text) for text in hostile] == [0.0, 0.0]
    assert time.perf_counter() - started < HANG_GUARD_S


FRAGMENTS = st.sampled_from(["<think>", "</think>", "\\boxed{", "}", "{", "\\", "x", "\n", "<", "think>", " "])


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAGMENTS, max_size=12).map("".join))
def test_literal_chain_agrees_with_the_regex_engine(text: str) -> None:
    expected = regex.fullmatch(DEFAULT_PATTERN, text, flags=regex.DOTALL) is not None
    assert format_reward(text) == float(expected)


# ---- ClevrPolicy accuracy --------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        (GOOD_CLEVR, 1.0),
        ("\\boxed{ case  12 }", 1.0),  # strip, collapse whitespace, any letter case
        ("\\boxed{CASE\n12}", 1.0),
        ("\\boxed{Case 3} then \\boxed{Case 12}", 1.0),  # the last box counts
        ("\\boxed{Case 12} then \\boxed{Case 3}", 0.0),
        ("\\boxed{Case 120}", 0.0),
        ("\\boxed{Case 012}", 0.0),
        ("\\boxed{12}", 0.0),
        ("\\boxed{\\text{Case 12}}", 0.0),
        ("Case 12", 0.0),  # not boxed
        (b"\\boxed{Case 12}", 1.0),
        (None, 0.0),
    ],
)
def test_clevr_accuracy(response: object, expected: float) -> None:
    assert clevr_accuracy(response, "Case 12") == expected


# ---- combined reward -------------------------------------------------------------------------


def test_clevr_combined_reward() -> None:
    # correct and well formed: 0.9 * 1 + 0.1 * 1 = 1.0; correct but no think block: 0.9 * 1 + 0.1 * 0 = 0.9;
    # well formed but wrong: 0.9 * 0 + 0.1 * 1 = 0.1
    assert score_response("clevr_policy-T-N6", GOOD_CLEVR, "Case 12", "{}", CFG) == {
        "reward": approx(1.0), "accuracy": 1.0, "format": 1.0,
    }
    assert score_response("clevr_policy-M-N4", "\\boxed{Case 12}", "Case 12", "{}", CFG)["reward"] == approx(0.9)
    assert score_response("clevr_policy-T-N6", GOOD_CLEVR, "Case 3", "{}", CFG)["reward"] == approx(0.1)


def test_weights_come_from_the_config() -> None:
    # accuracy_weight 0.5, format_weight 0.5; correct, unformatted: 0.5 * 1 + 0.5 * 0 = 0.5
    cfg = RewardConfig(accuracy_weight=0.5, format_weight=0.5)
    assert score_response("clevr_policy", "\\boxed{Case 12}", "Case 12", "{}", cfg)["reward"] == approx(0.5)


def test_gta_combined_reward() -> None:
    # exact call, well formed: tool 1, args 1 -> accuracy 0.5 + 0.5 = 1 -> reward 1.0.
    # right tool, text "red balls" vs "red ball": Jaccard {red} / {red, ball, balls} = 1/3 over two gold args
    #   -> args (1 + 1/3) / 2 = 2/3; accuracy 0.5 * 1 + 0.5 * 2/3 = 5/6; reward 0.9 * 5/6 + 0.1 = 0.85
    gold = json.dumps(COUNT)
    exact = score_response("gta_policy", boxed_call(COUNT), gold, "{}", CFG, similarity=token_overlap_similarity)
    assert exact == {"reward": approx(1.0), "accuracy": 1.0, "format": 1.0}
    near = {"name": COUNT["name"], "arguments": {**COUNT["arguments"], "text": "red balls"}}
    scored = score_response("gta", boxed_call(near), gold, "{}", CFG, similarity=token_overlap_similarity)
    assert scored["accuracy"] == approx(5 / 6) and scored["reward"] == approx(0.85)


def test_trusted_inputs_fail_loudly() -> None:
    with pytest.raises(ValueError, match="no reward for dataset 'mmlu'"):
        score_response("mmlu", GOOD_CLEVR, "Case 12", "{}", CFG)
    with pytest.raises(ValueError, match="gold answer is not a tool call"):
        score_response("gta_policy", GOOD_CLEVR, "Case 12", "{}", CFG, similarity=token_overlap_similarity)


def test_a_failing_scorer_is_scored_zero_not_raised() -> None:
    def broken_similarity(a: str, b: str) -> float:
        raise RuntimeError("similarity bug")

    near = {"name": COUNT["name"], "arguments": {**COUNT["arguments"], "text": "red balls"}}
    scored = score_response("gta_policy", boxed_call(near), json.dumps(COUNT), "{}", CFG, similarity=broken_similarity)
    assert scored == {"reward": 0.0, "accuracy": 0.0, "format": 0.0}


def test_non_finite_similarity_is_bounded() -> None:
    near = {"name": COUNT["name"], "arguments": {**COUNT["arguments"], "text": "red balls"}}
    scored = score_response("gta_policy", boxed_call(near), json.dumps(COUNT), "{}", CFG, similarity=lambda a, b: math.nan)
    assert all(math.isfinite(v) for v in scored.values())


HOSTILE_RESPONSES = st.one_of(
    st.none(),
    st.text(max_size=300),
    st.binary(max_size=300),
    st.integers(),
    st.lists(FRAGMENTS, max_size=30).map("".join),
    st.builds(lambda inner: "<think>x</think>\\boxed{" + inner + "}", st.text(max_size=200)),
    st.builds(lambda args: boxed_call({"name": COUNT["name"], "arguments": args}),
              st.dictionaries(st.sampled_from(["image", "text", "k", "bbox", "expression"]),
                              st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.none()))),
)


@settings(max_examples=250, deadline=None)
@given(HOSTILE_RESPONSES, st.sampled_from(["clevr_policy-T-N6", "gta_policy"]))
def test_no_response_raises_and_every_score_is_bounded(response: object, dataset: str) -> None:
    gold = json.dumps(COUNT) if dataset == "gta_policy" else "Case 12"
    scored = score_response(dataset, response, gold, "{}", CFG, similarity=token_overlap_similarity)
    assert set(scored) == {"reward", "accuracy", "format"}
    assert 0.0 <= scored["accuracy"] <= 1.0 and scored["format"] in (0.0, 1.0)
    assert 0.0 <= scored["reward"] <= CFG.accuracy_weight + CFG.format_weight + 1e-12


@settings(max_examples=150, deadline=None)
@given(HOSTILE_RESPONSES)
def test_scorers_themselves_never_raise(response: object) -> None:
    # The combine guard is a last resort; the scorers must not need it.
    assert format_reward(response) in (0.0, 1.0)
    assert clevr_accuracy(response, "Case 12") in (0.0, 1.0)
    assert 0.0 <= score_tool_call(response, COUNT, similarity=token_overlap_similarity)["reward"] <= 1.0  # type: ignore[arg-type]


# ---- DAPO overlong shaping -------------------------------------------------------------------


@pytest.mark.parametrize(
    "length, expected",
    [
        (10, 0.0),
        (80, 0.0),  # max_len - buffer = 100 - 20 = 80: still free
        (81, -0.05),  # (81 - 80) / 20 = 0.05
        (90, -0.5),  # (90 - 80) / 20 = 0.5
        (100, -1.0),  # the limit itself: the whole penalty
        (101, -1.0),
        (5_000, -1.0),
    ],
)
def test_overlong_penalty(length: int, expected: float) -> None:
    assert overlong_penalty(length, max_len=100, buffer=20, penalty=1.0) == approx(expected)


def test_overlong_penalty_scale_and_zero_buffer() -> None:
    assert overlong_penalty(90, max_len=100, buffer=20, penalty=0.5) == approx(-0.25)  # 0.5 * 10 / 20
    assert overlong_penalty(100, max_len=100, buffer=0, penalty=1.0) == 0.0
    assert overlong_penalty(101, max_len=100, buffer=0, penalty=1.0) == -1.0


def test_overlong_buffer_larger_than_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="rl.overlong.buffer=64"):
        overlong_penalty(10, max_len=32, buffer=64, penalty=1.0)


def test_shaped_reward() -> None:
    # enabled: 0.9 + (-(90 - 80) / 20) = 0.4; disabled: unchanged
    assert shaped_reward(0.9, 90, 100, OverlongConfig(enabled=True, buffer=20, penalty=1.0)) == approx(0.4)
    assert shaped_reward(0.9, 90, 100, OverlongConfig(enabled=False, buffer=20)) == 0.9


def test_gta_default_similarity_is_the_sentence_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without an injected similarity the packaged MiniLM is used (stubbed here: loading it is not the point).
    loaded: list[str] = []

    def fake_sentence_similarity() -> object:
        loaded.append("minilm")
        return lambda a, b: 0.5

    monkeypatch.setattr("mpi_ray.rewards.combine.sentence_similarity", fake_sentence_similarity)
    near = {"name": COUNT["name"], "arguments": {**COUNT["arguments"], "text": "red balls"}}
    scored = score_response("gta_policy", boxed_call(near), json.dumps(COUNT), "{}", CFG)
    # args (1 + 0.5) / 2 = 0.75 -> accuracy 0.5 + 0.5 * 0.75 = 0.875
    assert loaded == ["minilm"] and scored["accuracy"] == approx(0.875)
