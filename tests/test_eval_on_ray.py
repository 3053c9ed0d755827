"""Evaluation end to end on a loopback Ray cluster: the pipeline's eval and export stages (vLLM engines
through Ray Data, every suite, the report with its plots, the exported model card), and the
standalone jobs/evaluate.py on one suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

SMALL = ["model.tiny.size=xs", "data.clevr.depth=2", "data.clevr.policies=2", "data.clevr.train_per_policy=4",
         "data.clevr.test=6", "data.clevr.general=4", "data.clevr.variant=M", "eval.max_samples=4",
         "eval.max_response_len=16", "eval.efficiency_samples=2", "eval.efficiency_repeats=2", "rollout.max_prompt_len=2048"]


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_pipeline_evaluates_reports_and_exports(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = _run("jobs/trimpi.py", "--stages", "model,data,eval,export", f"run.dir={run}", *SMALL)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["final"] == "model" and results["dataset"].startswith("clevr_policy-M")
    suites = results["checkpoints"]["model"]["suites"]
    assert {"policy_free", "in_context", "override", "forgetting"} <= set(suites)
    assert suites["policy_free"]["samples"] == 4 and 0 <= suites["policy_free"]["accuracy"] <= 100
    efficiency = results["checkpoints"]["model"]["efficiency"]
    assert efficiency["samples"] == 2
    assert efficiency["prompt_tokens_with_policy"] > efficiency["prompt_tokens_without_policy"] > 0  # the policy is gone
    assert efficiency["ttft_with_policy_ms"] > 0 and efficiency["ttft_without_policy_ms"] > 0
    assert results["checkpoints"]["model"]["referral"]["programmatic"]["samples"] == 4

    responses = [json.loads(line) for line in (run / "eval" / "responses-model.jsonl").read_text().splitlines()]
    assert {r["suite"] for r in responses} == {"policy_free", "in_context", "override", "forgetting"}
    assert all(0 < r["response_tokens"] <= 16 for r in responses)
    in_context = {r["sample_id"]: r["prompt_tokens"] for r in responses if r["suite"] == "in_context"}
    assert all(in_context[r["sample_id"]] > r["prompt_tokens"] for r in responses if r["suite"] == "policy_free")

    report = (run / "report.md").read_text()
    assert "| In-Context (no MPI) |" in report and "## Efficiency" in report and "## Forgetting" in report
    assert "report:" in result.stdout and "| Method |" in result.stdout  # the job ends with the headline table
    export = run / "export" / "mpi-ray-policy-free"
    assert (export / "config.json").exists() and (export / "model.safetensors").exists()
    assert "| In-Context (no MPI) |" in (export / "README.md").read_text()


def test_evaluate_cli_runs_one_suite(tmp_path: Path, tiny_model_dir: Path) -> None:
    from conftest import small_clevr

    data = small_clevr(tmp_path / "data", variant="T", train_per_policy=4, test=4, general=0, cot_fraction=0.5, seed=1)
    out = tmp_path / "eval"
    result = _run("jobs/evaluate.py", "--checkpoint", str(tiny_model_dir), "--data", str(data), "--suite", "policy_free",
                  "--out", str(out), *SMALL[7:])
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    summary = json.loads((out / "results.json").read_text())
    assert list(summary["suites"]) == ["policy_free"] and summary["suites"]["policy_free"]["samples"] == 4
    assert _run("jobs/evaluate.py", "--checkpoint", str(tmp_path / "nope"), "--data", str(data)).returncode == 2


def test_evaluate_cli_scores_gtapolicy_tool_calls_and_rule_referral(tmp_path: Path, tiny_model_dir: Path) -> None:
    """GTAPolicy through the same path: tool / argument / overall scores, the rule-override block in
    context, and the rules the reasoning cites against the rules that fire."""
    from mpi_ray.data.gta_policy.__main__ import main as generate

    data = tmp_path / "gta"
    assert generate(["--out", str(data), "--train", "8", "--test", "4", "--seed", "2"]) == 0
    out = tmp_path / "eval"
    result = _run("jobs/evaluate.py", "--checkpoint", str(tiny_model_dir), "--data", str(data),
                  "--suite", "policy_free,in_context,override,referral", "--out", str(out), *SMALL[7:10])
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    summary = json.loads((out / "results.json").read_text())
    assert summary["dataset"].startswith("gta_policy")
    for suite in ("policy_free", "in_context", "override"):
        scores = summary["suites"][suite]
        assert scores["samples"] == 4 and {"tool", "arg"} <= set(scores), scores
        assert all(0 <= scores[key] <= 100 for key in ("tool", "arg", "accuracy"))
    rules = summary["referral"]["rules"]
    assert rules["samples"] == 4 and 0 <= rules["rules_exact"] <= 1, rules
    responses = [json.loads(line) for line in (out / "responses-checkpoint.jsonl").read_text().splitlines()]
    assert all(r["rule_ids"] for r in responses if r["suite"] == "policy_free")  # every GTA sample fires a rule
