"""Learner progress lines: rate and ETA are measured from the end of the first step, start-up excluded."""

from __future__ import annotations

import pytest

from mpi_ray.train import progress
from mpi_ray.train.progress import Pace


def test_first_step_has_no_eta_and_later_steps_exclude_its_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 102.0, 104.0])  # step 1 ends after a long start-up; then 2 s a step
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    pace = Pace(total_steps=10)
    assert pace.update(1, 500) == (None, None)
    assert pace.update(2, 1500) == (500.0, 16.0)  # 1000 tokens in 2 s; 8 steps left at 2 s
    assert pace.update(3, 2500) == (500.0, 14.0)
    assert Pace.describe(None, None) == "ETA -"
    assert Pace.describe(500.0, 14.0) == "500 tok/s ETA 14s"


def test_a_resumed_run_measures_from_its_own_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 3.0])
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    pace = Pace(total_steps=8)
    pace.update(5)  # the first step after a restore from step 4
    assert pace.update(6) == (0.0, 6.0)


def test_a_long_stage_prints_about_every_two_percent_of_its_steps() -> None:
    pace = Pace(total_steps=1024)
    printed = []
    for step in range(1, 1025):
        if pace.due(step):
            printed.append(step)
        pace.update(step)
    assert printed[:3] == [1, 20, 40] and printed[-1] == 1024 and len(printed) == 53
    short = Pace(total_steps=8)
    assert all(short.due(step) for step in range(1, 9))
