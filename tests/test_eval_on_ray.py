"""The standalone jobs/evaluate.py on GTAPolicy, on the session's loopback cluster (vLLM engines through
Ray Data). The pipeline's eval and export stages on ClevrPolicy-M: tests/test_pipeline.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

EVAL = ["eval.max_samples=4", "eval.max_response_len=16", "eval.efficiency_samples=2"]


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_evaluate_cli_refuses_a_checkpoint_that_is_not_an_hf_folder(tmp_path: Path) -> None:
    """Exit 2 before any Ray work."""
    result = _run("jobs/evaluate.py", "--checkpoint", str(tmp_path / "nope"), "--data", str(tmp_path))
    assert result.returncode == 2 and "error:" in result.stderr


@pytest.mark.slow
def test_evaluate_cli_scores_gtapolicy_tool_calls_and_rule_referral(ray_cluster, tmp_path: Path, tiny_model_dir: Path) -> None:
    """The suites asked for and no others: tool / argument / overall scores, the rule-override block in
    context, and the rules the reasoning cites against the rules that fire."""
    from mpi_ray.data.gta_policy.__main__ import main as generate

    data = tmp_path / "gta"
    assert generate(["--out", str(data), "--train", "8", "--test", "4", "--seed", "2"]) == 0
    out = tmp_path / "eval"
    result = _run("jobs/evaluate.py", "--checkpoint", str(tiny_model_dir), "--data", str(data),
                  "--suite", "policy_free,in_context,override,referral", "--out", str(out), *EVAL)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "joined Ray cluster at" in result.stdout
    summary = json.loads((out / "results.json").read_text())
    assert summary["dataset"].startswith("gta_policy")
    assert set(summary["suites"]) == {"policy_free", "in_context", "override"}
    responses = [json.loads(line) for line in (out / "responses-checkpoint.jsonl").read_text().splitlines()]
    for suite, scores in summary["suites"].items():  # each figure is the mean of its scored responses
        scored = [r["scores"] for r in responses if r["suite"] == suite]
        assert scores["samples"] == len(scored) == 4
        for key in ("tool", "arg", "accuracy", "format"):
            assert scores[key] == pytest.approx(100 * sum(s[key] for s in scored) / 4), (suite, key)
    rules = summary["referral"]["rules"]
    assert rules["samples"] == 4 and 0 <= rules["rules_exact"] <= 1, rules
    assert all(r["rule_ids"] for r in responses if r["suite"] == "policy_free")  # every GTA sample fires a rule
