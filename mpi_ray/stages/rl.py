"""Stage `rl`: GRPO / DAPO / PoRo-GRPO / PoRo-DAPO from the newest model (mpi_ray/train/rl_trainer.py)."""

from __future__ import annotations

from typing import Any

from mpi_ray.pipeline import StageContext
from mpi_ray.train.rl_trainer import run_rl_stage


def describe(ctx: StageContext) -> str:
    rl, rollout = ctx.cfg.rl, ctx.cfg.rollout
    workers = rl.workers or ctx.cfg.resources.learner_workers
    return (f"{rl.algorithm} (full parameters), {rollout.engines} vLLM rollout engines, {workers} x "
            f"{ctx.cfg.learner.strategy} learners, max_staleness {rollout.max_staleness} -> {ctx.run.stage_dir('rl') / 'hf'}")


def run(ctx: StageContext) -> dict[str, Any]:
    source = ctx.current_model()
    outputs = run_rl_stage(ctx.cfg, source, ctx.outputs["data"], ctx.run.stage_dir("rl"))
    if outputs["early_stop"]:
        print(f"[rl] stopped early after {outputs['rl_steps']} of {outputs['rl_planned_steps']} steps: {outputs['early_stop']}")
    return {**outputs, "from_model": source}
