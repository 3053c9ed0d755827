"""Stage `sft`: see mpi_ray/stages/learner.py."""

from __future__ import annotations

from typing import Any

from mpi_ray.pipeline import StageContext
from mpi_ray.stages.learner import describe_stage, run_stage, start_learner_ahead


def describe(ctx: StageContext) -> str:
    return describe_stage(ctx, "sft")


def start_ahead(ctx: StageContext) -> Any:
    return start_learner_ahead(ctx, "sft")


def run(ctx: StageContext) -> dict[str, Any]:
    return run_stage(ctx, "sft")
