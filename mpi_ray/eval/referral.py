"""Policy Referral: does the model's reasoning walk the policy the way the gold path does?

Programmatic (ClevrPolicy): the conditions the reasoning visits, read off the CoT ("Condition 1.2
checks ..." / "Condition 1.2 shows ...", the form the CoT targets teach), against the gold path. The
branching error is the depth of the first condition where the two paths part (the paper's
branching-error figure); a path that stops early or wanders past the leaf counts at that depth.

Programmatic (GTAPolicy): the rules the reasoning cites ("Rule 5 applies", "Rule 22: ...") against
the rules that fire for the sample (its version rule and its tips); order-free, since a GTAPolicy
decision is not a walk down a tree.

LLM judge (any dataset): the paper's 0-10 rubric (App. I) sent to an OpenAI-compatible endpoint
(our own Ray Serve endpoint included); the score is read from under "## Score ##".
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from typing import Any

VISIT = re.compile(r"Condition (\d+(?:\.\d+)*) (?:checks|shows)")
CITE = re.compile(r"\bRule (\d+)\b")
# Possessive quantifiers: with plain ones a reply of "## Score ##" and 60,000 spaces backtracks
# through every split of the spaces (quadratic: seconds per reply).
SCORE = re.compile(r"##\s*+Score\s*+##\s*+\**+\s*+(\d++(?:\.\d+)?)")

JUDGE_PROMPT = """You are checking whether a model's reasoning follows a policy faithfully.

## Policy ##
{policy}
---
## Model Response ##
{response}
---
Check every reference the reasoning makes to a rule or condition of the policy: is the referenced rule
real, quoted correctly, and applied at the right point of the policy? Then rate the response from 0
(the reasoning refers to the policy wrongly or not at all) to 10 (every reference is correct).
Answer with a short justification, then the score alone on the line after "## Score ##"."""


def _text(value: object) -> str:
    """Model or judge output as a string; anything else (None, a number, a dict) reads as no text."""
    return value if isinstance(value, str) else ""


def visited_conditions(text: str) -> list[str]:
    """Condition IDs the reasoning visits, in order, each once."""
    return list(dict.fromkeys(VISIT.findall(_text(text))))


def path_referral(text: str, gold_path: list[dict[str, Any]]) -> dict[str, Any]:
    """{exact, recall, precision, diverges_at}: diverges_at is the 0-based depth of the first
    difference between the visited and the gold condition sequence, None when they are equal."""
    gold = [str(step["condition"]) for step in gold_path]
    visited = visited_conditions(text)
    diverges_at = next((i for i, (a, b) in enumerate(zip(visited, gold)) if a != b), None)
    if diverges_at is None and len(visited) != len(gold):
        diverges_at = min(len(visited), len(gold))
    hits = len(set(visited) & set(gold))
    return {"exact": diverges_at is None, "recall": hits / len(gold) if gold else 1.0,
            "precision": hits / len(visited) if visited else 0.0, "diverges_at": diverges_at}


def summarize_paths(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over responses, and how many paths part from the gold at each depth."""
    if not results:
        return {}
    count = len(results)
    depths = Counter(r["diverges_at"] for r in results if r["diverges_at"] is not None)
    return {
        "samples": count,
        "path_exact": sum(r["exact"] for r in results) / count,
        "condition_recall": sum(r["recall"] for r in results) / count,
        "condition_precision": sum(r["precision"] for r in results) / count,
        "branching_errors_by_depth": {str(depth): depths[depth] for depth in sorted(depths)},
    }


def decisions(text: str, gold_path: list[dict[str, Any]], correct: bool) -> list[tuple[str, bool]]:
    """(condition, took the gold branch) for each gold condition the reasoning reached along the gold
    path: a branch is read off the next condition visited, the last one's off the final answer. Says
    which condition's check (which perception) the errors come from."""
    gold = [str(step["condition"]) for step in gold_path]
    visited = visited_conditions(text)
    taken = []
    for depth, condition in enumerate(gold):
        if visited[: depth + 1] != gold[: depth + 1]:
            break
        if depth == len(gold) - 1:
            taken.append((condition, correct and len(visited) == len(gold)))
        else:
            taken.append((condition, visited[depth + 1: depth + 2] == [gold[depth + 1]]))
    return taken


def summarize_decisions(per_response: list[list[tuple[str, bool]]]) -> dict[str, dict[str, int]]:
    """{condition: {reached, right}}, conditions shallowest first (1, 1.1, 1.2, 1.1.1, ...)."""
    counts: dict[str, dict[str, int]] = {}
    for taken in per_response:
        for condition, right in taken:
            entry = counts.setdefault(condition, {"reached": 0, "right": 0})
            entry["reached"] += 1
            entry["right"] += right
    return {c: counts[c] for c in sorted(counts, key=lambda c: (c.count("."), [int(part) for part in c.split(".")]))}


def cited_rules(text: str) -> list[str]:
    """GTAPolicy rule IDs ("R5") the reasoning cites, in order, each once."""
    return list(dict.fromkeys(f"R{number}" for number in CITE.findall(_text(text))))


def rule_referral(text: str, fired: list[str]) -> dict[str, Any]:
    """{exact, recall, precision} of the cited rules against the rules that fire (non-empty)."""
    cited, gold = set(cited_rules(text)), set(fired)
    hits = len(cited & gold)
    return {"exact": cited == gold, "recall": hits / len(gold), "precision": hits / len(cited) if cited else 0.0}


def summarize_rules(results: list[dict[str, Any]]) -> dict[str, Any]:
    count = len(results)
    return {"samples": count, "rules_exact": sum(r["exact"] for r in results) / count,
            "rule_recall": sum(r["recall"] for r in results) / count,
            "rule_precision": sum(r["precision"] for r in results) / count}


def judge_score(reply: str) -> float | None:
    """The 0-10 score under '## Score ##', or None when the judge gave none."""
    match = SCORE.search(_text(reply))
    if match is None:
        return None
    return min(10.0, max(0.0, float(match.group(1))))


def _post(url: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - a configured judge URL
        return json.loads(reply.read())


def judge_model_id(base_url: str, timeout: float = 30.0) -> str:
    """The first model the endpoint lists (GET /v1/models)."""
    models = _post(base_url.rstrip("/") + "/v1/models", None, timeout)["data"]
    return models[0]["id"]


def ask_judge(base_url: str, model: str, policy: str, response: str, timeout: float = 120.0) -> float | None:
    """One rubric call to an OpenAI-compatible /v1/chat/completions; the parsed score."""
    body = {"model": model, "temperature": 0.0, "max_tokens": 512,
            "messages": [{"role": "user", "content": JUDGE_PROMPT.format(policy=policy, response=response)}]}
    reply = _post(base_url.rstrip("/") + "/v1/chat/completions", body, timeout)
    return judge_score(reply["choices"][0]["message"]["content"])
