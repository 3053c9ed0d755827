"""The ablation's row tree, per-row configs and report (pure logic; the runs themselves are the
pipeline's stages, tested elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpi_ray.ablation import BY_NAME, ROWS, needed, node_config, node_dir, plot, report_lines, summarize

from conftest import REPO

DEFAULT = str(REPO / "configs/default.yaml")


def test_rows_need_their_ancestors_only() -> None:
    assert [n.name for n in needed(["poro_grpo"])] == ["base", "cpt", "cpt_cot_sft", "poro_grpo"]
    assert [n.name for n in needed(["direct_sft", "cot_sft"])] == ["base", "direct_sft", "cot_sft"]
    assert len(needed(list(ROWS))) == len(ROWS) + 1  # + the shared VM-CPT
    with pytest.raises(ValueError, match="unknown ablation row"):
        needed(["cot_sft", "ppo"])


def test_each_node_config_carries_its_branch_and_seed(tmp_path: Path) -> None:
    cfg = node_config(DEFAULT, ["rl.max_steps=2"], tmp_path, BY_NAME["poro_dapo"], 3)
    assert (cfg.rl.algorithm, cfg.rl.kl_coef, cfg.rl.max_steps, cfg.sft.target, cfg.run.seed) == ("poro-dapo", 0, 2, "cot", 3)
    assert cfg.run.dir == str(tmp_path / "seed3" / "poro_dapo")
    assert node_config(DEFAULT, [], tmp_path, BY_NAME["direct_sft"], 0).sft.target == "direct"
    assert node_config(DEFAULT, [], tmp_path, BY_NAME["base"], 7).run.dir == str(tmp_path / "base")  # shared by seeds


def test_report_has_mean_std_per_seed_and_the_paper_column(tmp_path: Path) -> None:
    accuracy = {"base": {0: 25.0, 1: 25.0}, "cot_sft": {0: 60.0, 1: 70.0}, "poro_grpo": {0: 71.0, 1: 73.0}}
    forgetting = {"base": {0: 40.0, 1: 40.0}, "cot_sft": {0: 0.0, 1: 2.0}}
    results = summarize(accuracy, forgetting, [0, 1], 12.34)
    assert [r["row"] for r in results["rows"]] == ["base", "cot_sft", "poro_grpo"]  # the paper's order
    cot = results["rows"][1]
    assert (cot["mean"], round(cot["std"], 3), cot["forgetting"], cot["paper_t"]) == (65.0, 7.071, 1.0, 17.80)
    lines = report_lines(results, "configs/default.yaml")
    assert "| CoT SFT | 65.0 +- 7.1 | 60.0, 70.0 | 1.0 | 17.80 |" in lines
    assert "| TriMPI w/ PoRo-GRPO | 72.0 +- 1.4 | 71.0, 73.0 | - | 65.85 |" in lines
    assert plot(results, tmp_path / "ablation.png").stat().st_size > 1000


def test_the_paper_orderings_are_judged_against_the_spread() -> None:
    from mpi_ray.ablation import ordering_lines

    accuracy = {"base": {0: 25.0, 1: 25.0}, "cot_sft": {0: 60.0, 1: 70.0}, "cpt_cot_sft": {0: 58.0, 1: 66.0},
                "grpo": {0: 72.0, 1: 72.0}, "poro_grpo": {0: 71.0, 1: 71.0}}
    lines = ordering_lines(summarize(accuracy, {}, [0, 1], 1.0))
    assert "- MPI beats the policy in context: In-Context (no MPI) 25.0 vs CoT SFT 65.0 (+40.0 points): **holds**" in lines
    assert any(line.startswith("- VM-CPT helps SFT") and "not separated" in line for line in lines)  # -3 within std 7
    assert any(line.startswith("- PoRo beats plain GRPO") and line.endswith("**reversed**") for line in lines)
    assert not any("DAPO" in line for line in lines)  # rows not run are left out
    # on 200 test scenes a 1-point gap is inside the test set's own noise (one standard error: 4.5 points)
    on_200 = ordering_lines(summarize(accuracy, {}, [0, 1], 1.0, {name: 200 for name in accuracy}))
    assert any(line.startswith("- PoRo beats plain GRPO") and "not separated" in line for line in on_200)


def test_the_report_shows_poro_groups_early_in_rl_from_the_node_runs(tmp_path: Path) -> None:
    from mpi_ray.ablation import write_report

    for seed, aware in ((0, 0.25), (1, 0.75)):
        rl = node_dir(tmp_path, BY_NAME["poro_grpo"], seed) / "rl"
        rl.mkdir(parents=True)
        rl.joinpath("metrics.jsonl").write_text("".join(json.dumps(
            {"step": step, "policy_free/accuracy": 0.5, "policy_aware/accuracy": aware, "poro/free_unsolved": 0.25,
             "poro/rescued": 0.125 * seed}) + "\n" for step in range(1, 9)))
        plain = node_dir(tmp_path, BY_NAME["grpo"], seed) / "rl"  # plain GRPO: no policy-aware group, no row
        plain.mkdir(parents=True)
        plain.joinpath("metrics.jsonl").write_text(json.dumps({"step": 1, "policy_free/accuracy": 0.5}) + "\n")
    results = summarize({"poro_grpo": {0: 70.0, 1: 72.0}, "grpo": {0: 70.0, 1: 71.0}}, {}, [0, 1], 1.0)
    (tmp_path / "results.json").write_text(json.dumps(results))
    report = write_report(tmp_path).read_text()
    assert "| TriMPI w/ PoRo-GRPO | steps 1-2 | 0.50 | 0.50 | 1 of 2 | 6.2% |" in report
    assert "| TriMPI w/ GRPO (no PoRo) | steps" not in report
    assert json.loads((tmp_path / "results.json").read_text())["rl_groups"][0]["aware_above"] == 1
