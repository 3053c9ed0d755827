"""The one rule of a learner stage's metrics.jsonl: a run resumed from the checkpoint of step k keeps
the rows of steps <= k, then appends; a fresh run starts the file anew."""

from __future__ import annotations

import json
from pathlib import Path

from mpi_ray.train.metrics_log import open_metrics_log


def _write(path: Path, steps: list[int], key: str = "micro_step") -> None:
    path.write_text("".join(json.dumps({key: step, "loss": float(step)}) + "\n" for step in steps))


def _steps(path: Path, key: str = "micro_step") -> list[int]:
    return [json.loads(line)[key] for line in path.read_text().splitlines()]


def test_a_resumed_run_drops_the_steps_it_redoes_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, [1, 2, 3, 4, 4, 5])  # a first try got past the step-3 checkpoint, and step 4 was logged twice
    with open_metrics_log(path, "micro_step", resumed_at=3) as log:
        assert _steps(path) == [1, 2, 3]  # already on disk before the first new row
        for step in (4, 5, 6):
            log.write(json.dumps({"micro_step": step}) + "\n")
    assert _steps(path) == [1, 2, 3, 4, 5, 6]


def test_the_step_key_is_the_stages_own(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, [1, 2, 3, 4], key="step")  # the RL loop's rows
    open_metrics_log(path, "step", resumed_at=2).close()
    assert _steps(path, "step") == [1, 2]


def test_a_fresh_run_starts_the_file_anew(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, [1, 2])
    open_metrics_log(path, "micro_step", resumed_at=None).close()
    assert path.read_text() == ""
    missing = tmp_path / "new" / "metrics.jsonl"
    missing.parent.mkdir()
    open_metrics_log(missing, "micro_step", resumed_at=5).close()  # resumed, but no file yet
    assert missing.read_text() == ""
