"""The run's time split: work from the stages' own step timestamps, the rest start-up and waiting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpi_ray.timing import stage_times, write_timing


def _stage(run: Path, stage: str, seconds: float, step_times: list[float] | None = None,
           step_s: list[float] | None = None) -> None:
    (run / "stages").mkdir(parents=True, exist_ok=True)
    (run / "stages" / f"{stage}.json").write_text(json.dumps({"stage": stage, "seconds": seconds, "outputs": {}}))
    if step_times is not None:
        (run / stage).mkdir(exist_ok=True)
        rows = [{"time": t, **({"step_s": step_s[i]} if step_s else {})} for i, t in enumerate(step_times)]
        (run / stage / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_work_is_steps_times_the_median_step_and_eval_less_its_engine_start(tmp_path: Path) -> None:
    _stage(tmp_path, "data", 20.0)
    _stage(tmp_path, "cpt", 100.0, [1000.0, 1002.0, 1004.0, 1500.0, 1502.0, 1504.0])  # resumed: 6 x 2 s
    _stage(tmp_path, "rl", 50.0, [5.0])  # one step: no span to read
    _stage(tmp_path, "eval", 80.0)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps({"engine_startup_s": 30.0}))
    rows = {row["stage"]: row for row in stage_times(tmp_path)}
    assert list(rows) == ["data", "cpt", "rl", "eval"]
    assert (rows["data"]["work_s"], rows["data"]["startup_s"]) == (20.0, 0.0)
    assert (rows["cpt"]["work_s"], rows["cpt"]["startup_s"]) == (12.0, 88.0)
    assert rows["rl"]["work_s"] is None and (rows["eval"]["work_s"], rows["eval"]["startup_s"]) == (50.0, 30.0)

    (tmp_path / "report.md").write_text("# report\n\n| a | b |\n")
    lines = write_timing(tmp_path)
    assert "| all | 200.0 | 82.0 | 118.0 | 59.0% |" in lines and "| rl | 50.0 | - | - | - |" in lines
    write_timing(tmp_path)  # a re-run replaces the section instead of adding a second one
    assert (tmp_path / "report.md").read_text().count("## Where the time went") == 1
    assert json.loads((tmp_path / "timing.json").read_text())[1]["work_s"] == 12.0


def test_a_learner_stage_that_measured_its_steps_counts_their_compute_as_work(tmp_path: Path) -> None:
    """`step_s` (each step's measured compute): step-to-step jitter is work, not waiting; the waits for a
    batch and the checkpoint saves between the steps are not."""
    _stage(tmp_path, "sft", 60.0, [10.0, 10.5, 13.0, 13.2], step_s=[0.4, 0.3, 0.2, 0.25])
    _stage(tmp_path, "rl", 30.0, [10.0, 12.0, 14.0], step_s=[0.5, 0.5, 0.5])  # RL's step_s: the update alone
    rows = {row["stage"]: row for row in stage_times(tmp_path)}
    assert rows["sft"]["work_s"] == pytest.approx(1.15)
    assert rows["rl"]["work_s"] == 6.0  # generation and update: steps x the median step
