"""The whitelisted arithmetic evaluator: values, rejections, hostile input, and no-raise properties."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import HANG_GUARD_S
from mpi_ray.rewards.safe_math import evaluate_expression, expressions_equivalent

VALUES = [
    ("1 + 2 * 3", 7),
    ("(8 + 5) * 2", 26),
    ("7 / 2", 3.5),
    ("7 // 2", 3),
    ("7 % 3", 1),
    ("-3 + +4", 1),
    ("2 ** 10", 1024),
    ("2 ** -1", 0.5),
    ("12.5 + 3.75 * 2", 20.0),
    ("sqrt(16) + math.sqrt(9)", 7.0),
    ("math.pi * 2", 2 * math.pi),
    ("round(75 / 4.5, 2)", 16.67),
    ("round(2.5)", 2),
    ("abs(-4) + max(1, 5, 3) - min(2, 8)", 7),
    ("math.log(math.e) + log10(1000) + log2(8)", 7.0),
    ("math.factorial(5) + comb(5, 2) + perm(4, 2)", 142),
    ("math.floor(2.7) + ceil(2.1) + int(3.9) + float(1)", 9.0),
    ("math.hypot(3, 4)", 5.0),
    ("1e3 / 4", 250.0),
    ("2 ** 1000 // 2 ** 999", 2),
]

REJECTED = [
    "__import__('os').system('echo pwned')",
    "open('/etc/passwd').read()",
    "().__class__.__bases__[0].__subclasses__()",
    "math.__dict__",
    "(lambda: 1)()",
    "[x for x in range(10)]",
    "'a' * 3",
    "(1,) * 10",
    "x + 1",
    "print(1)",
    "1 if True else 2",
    "1 < 2",
    "3 ^ 1",
    "1 << 100",
    "True + 1",
    "round(1.5, ndigits=1)",
    "9**9**9**9",
    "10 ** 10 ** 10",
    "2 ** 5000",
    "factorial(100000)",
    "comb(10**6, 500000)",
    "round(10 ** 100, -1000)",
    "1e308 * 10",
    "math.exp(1000)",
    "1 / 0",
    "0 ** -1",
    "(-8) ** (1 / 3)",
    "math.sqrt(-1)",
    "1 +",
    "",
    "   ",
    "1 + 1; import os",
    "(" * 1000 + "1" + ")" * 1000,
    "-" * 900 + "1",
    "+".join(["1"] * 400),
    "1" * 2000,
    "a\x00b",
]


@pytest.mark.parametrize("text, expected", VALUES)
def test_values(text: str, expected: float) -> None:
    value = evaluate_expression(text)
    assert value is not None and math.isclose(value, expected, rel_tol=1e-12)


@pytest.mark.parametrize("text", REJECTED)
def test_rejected_quickly(text: str) -> None:
    start = time.perf_counter()
    assert evaluate_expression(text) is None
    assert time.perf_counter() - start < HANG_GUARD_S


def test_non_strings_are_rejected() -> None:
    for value in (None, 3, 2.5, b"1+1", ["1"], {"a": 1}):
        assert evaluate_expression(value) is None


def test_nothing_is_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for text in (f"__import__('os').system('touch {marker}')", f"open('{marker}', 'w')"):
        assert evaluate_expression(text) is None
    assert not marker.exists()


def test_equivalence() -> None:
    assert expressions_equivalent("2 * 3", "6")
    assert expressions_equivalent("12.5+7.5", "12.5 + 3.75 * 2")
    assert expressions_equivalent("0.1 + 0.2", "0.3")
    assert expressions_equivalent("math.sqrt(2) ** 2", "2")
    assert not expressions_equivalent("2 * 3", "7")
    assert not expressions_equivalent("__import__('os')", "6")
    assert not expressions_equivalent(6, "6")  # a number is not an expression string
    # a gold the evaluator cannot read is compared as text, whitespace ignored
    assert expressions_equivalent("sum([1, 2])", "sum([1,2])")
    assert not expressions_equivalent("3", "sum([1,2])")


@settings(max_examples=300, deadline=1000)
@given(st.text(max_size=300))
def test_any_text_returns_a_finite_number_or_none(text: str) -> None:
    value = evaluate_expression(text)
    assert value is None or (isinstance(value, (int, float)) and math.isfinite(value))


ARITHMETIC = st.text(alphabet="0123456789+-*/%().e ", max_size=120)


@settings(max_examples=300, deadline=1000)
@given(ARITHMETIC)
def test_arithmetic_shaped_text_never_raises(text: str) -> None:
    value = evaluate_expression(text)
    assert value is None or isinstance(value, (int, float))


@settings(max_examples=100, deadline=1000)
@given(st.integers(-10**6, 10**6), st.integers(-10**6, 10**6))
def test_agrees_with_python_on_integer_arithmetic(a: int, b: int) -> None:
    assert evaluate_expression(f"{a} + {b} * 3 - ({a})") == a + b * 3 - a
    if b:
        assert evaluate_expression(f"({a}) // ({b})") == a // b


def test_integers_beyond_a_float_compare_without_raising() -> None:
    """A model answer of 10**400 once raised OverflowError here and killed a GTAPolicy evaluation."""
    assert expressions_equivalent("10**400", "10**400")
    assert not expressions_equivalent("10**400", "10**400 + 1")
    assert not expressions_equivalent("10**400", "2+2")
    assert not expressions_equivalent("10**400", "1.5e300")
    assert not expressions_equivalent("1.5e300", "10**400")


def test_a_calculator_call_with_a_huge_integer_scores_without_raising() -> None:
    from mpi_ray.rewards.gta_score import score_tool_call

    gold = {"name": "Calculator_v1", "arguments": {"expression": "2+2"}}
    answer = '{"name": "Calculator_v1", "arguments": {"expression": "10**400"}}'
    scores = score_tool_call(answer, gold)
    assert scores["tool"] == 1.0 and scores["args"] == 0.0
