"""Hostile model outputs against every reward and scoring entry point: exceptions and seconds per call.

    python benchmarks/fuzz_scoring.py [--inputs 100000] [--seed 0]

Each input (unicode soup, up to 10 MB strings, deep nesting, arithmetic bombs, injection strings, huge
integers, boxed/think/tool-call fragments, non-strings) goes to every entry point below, in-process and
one at a time. Prints a table: calls, exceptions (goal 0), the slowest call (goal under 1 s), and the
input kind of that slowest call. The scorers the RL reward and the evaluation use are called directly,
below their last-resort guard (`rewards.combine.response_scores` logs and scores 0 on an exception),
so an exception here is one the guard would have had to hide.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from typing import Any, Callable, Iterator

from mpi_ray.eval.referral import cited_rules, judge_score, path_referral, visited_conditions
from mpi_ray.rewards.boxed import extract_boxed
from mpi_ray.rewards.clevr import clevr_accuracy
from mpi_ray.rewards.format import DEFAULT_PATTERN, format_reward
from mpi_ray.rewards.gta_score import parse_tool_call, score_tool_call
from mpi_ray.rewards.text_similarity import token_overlap_similarity
from mpi_ray.rewards.safe_math import evaluate_expression, expressions_equivalent

GOLD_CALL = {"name": "Calculator", "arguments": {"expression": "2*(3+4)"}}
GOLD_PATH = [{"condition": "1", "holds": True}, {"condition": "1.1", "holds": False}]
FRAGMENTS = ["\\boxed{", "}", "{", "<think>", "</think>", "Case 3", "Condition 1.2", "Rule 4", "## Score ##",
             '{"name": "Calculator", "arguments": {"expression": "', '"}}', "**", "10**", "9" * 50, "(", ")",
             "\\text{", "'; DROP TABLE x; --", "{{7*7}}", "${jndi:ldap://x}", "\x00", "\ud800", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\u202e",
             " " * 1000, "\n" * 100, "[" * 500, "]" * 500]

ENTRY_POINTS: dict[str, Callable[[Any], Any]] = {
    "extract_boxed": extract_boxed,
    "clevr_accuracy": lambda x: clevr_accuracy(x, "Case 3"),
    "format_reward": lambda x: format_reward(x, DEFAULT_PATTERN),
    "parse_tool_call": parse_tool_call,
    "score_tool_call": lambda x: score_tool_call(x, GOLD_CALL, token_overlap_similarity),
    "evaluate_expression": evaluate_expression,
    "expressions_equivalent": lambda x: expressions_equivalent(x, "2*(3+4)"),
    "visited_conditions": visited_conditions,
    "path_referral": lambda x: path_referral(x, GOLD_PATH),
    "cited_rules": cited_rules,
    "judge_score": judge_score,
}


def hostile_inputs(count: int, rng: random.Random) -> Iterator[tuple[str, Any]]:
    """(kind, value) pairs; a handful of 10 MB strings, the rest small to medium."""
    for index in range(count):
        kind = "big" if index % 5000 == 0 else rng.choice(
            ["soup", "fragments", "nested", "bomb", "huge_int", "tool_call", "non_string"])
        if kind == "soup":
            yield kind, "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(200)))
        elif kind == "fragments":
            yield kind, "".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(1, 40)))
        elif kind == "nested":
            depth = rng.randrange(1, 5000)
            yield kind, rng.choice(["\\boxed{" * depth + "x" + "}" * depth, "(" * depth + "1" + ")" * depth,
                                    '{"a":' * depth + "1" + "}" * depth, "[" * depth])
        elif kind == "bomb":
            yield kind, rng.choice(["9**9**9**9", "10**400", "2**" + "9" * 30, "(" + "9" * 4000 + ")**99",
                                    "factorial(100000)", "1e308*1e308", "-" * 3000 + "1", "1/0", "0**-1"])
        elif kind == "huge_int":
            yield kind, str(rng.randrange(10 ** rng.randrange(1, 4300)))
        elif kind == "tool_call":
            expression = rng.choice(["10**400", "1/0", "(" * 3000, "x" * 100, "2*(3+4)", "9" * 5000])
            yield kind, json.dumps({"name": rng.choice(["Calculator", "OCR", "", "x" * 5000]),
                                    "arguments": {"expression": expression, "image": "\u0000" * rng.randrange(10)}})
        elif kind == "non_string":
            yield kind, rng.choice([None, 0, 1.5, float("nan"), b"\xff\xfe", ["\\boxed{Case 3}"], {"text": "x"}, object()])
        else:  # 10 MB, one of each in turn
            yield kind, ["\\boxed{" + "Case 3 " * 1_500_000 + "}", " " * 10_000_000, "{" * 10_000_000,
                         "## Score ##" + " " * 10_000_000, "Condition 1." * 900_000][(index // 5000) % 5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.setrecursionlimit(10_000)
    calls: dict[str, int] = defaultdict(int)
    failures: dict[str, list[str]] = defaultdict(list)
    slowest: dict[str, tuple[float, str]] = defaultdict(lambda: (0.0, ""))
    started = time.perf_counter()
    for kind, value in hostile_inputs(args.inputs, random.Random(args.seed)):
        for name, entry in ENTRY_POINTS.items():
            tick = time.perf_counter()
            try:
                entry(value)
            except Exception as error:  # noqa: BLE001 - counting them is the point
                failures[name].append(f"{kind}: {type(error).__name__}: {str(error)[:80]}")
            seconds = time.perf_counter() - tick
            calls[name] += 1
            if seconds > slowest[name][0]:
                slowest[name] = (seconds, kind)
    print(f"{args.inputs:,} hostile inputs x {len(ENTRY_POINTS)} entry points in {time.perf_counter() - started:.0f} s")
    print(f"{'entry point':<24} {'calls':>8} {'exceptions':>10} {'slowest s':>10}  slowest input")
    for name in ENTRY_POINTS:
        print(f"{name:<24} {calls[name]:>8,} {len(failures[name]):>10} {slowest[name][0]:>10.3f}  {slowest[name][1]}")
    for name, errors in failures.items():
        if errors:
            print(f"  {name}: {errors[:3]}")


if __name__ == "__main__":
    main()
