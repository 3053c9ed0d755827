"""Stage `rl`: GRPO / DAPO / PoRo-GRPO / PoRo-DAPO from the newest model (mpi_ray/train/rl_trainer.py)."""

from __future__ import annotations

from typing import Any

from mpi_ray.pipeline import StageContext
from mpi_ray.train.rl_trainer import max_images, run_rl_stage


def describe(ctx: StageContext) -> str:
    rl, rollout = ctx.cfg.rl, ctx.cfg.rollout
    workers = rl.workers or ctx.cfg.resources.learner_workers
    return (f"{rl.algorithm} (full parameters), {rollout.engines} vLLM rollout engines, {workers} x "
            f"{ctx.cfg.learner.strategy} learners, max_staleness {rollout.max_staleness} -> {ctx.run.stage_dir('rl') / 'hf'}")


def start_ahead(ctx: StageContext) -> Any:
    """Called as the stage before this one starts: with rollout.prestart, launch the rollout engines
    now, from that stage's input model (mpi_ray/rollout/prestart.py); None otherwise."""
    if not ctx.cfg.rollout.prestart or "data" not in ctx.outputs or "model" not in ctx.outputs:
        return None
    from mpi_ray.rollout.prestart import start_engines  # imports vLLM's settings only when used

    print(f"[rl] starting {ctx.cfg.rollout.engines} rollout engine(s) ahead, beside the stage before (rollout.prestart)",
          flush=True)
    return start_engines(ctx.cfg, ctx.current_model(), max_images(ctx.outputs["data"]))


def run(ctx: StageContext) -> dict[str, Any]:
    source = ctx.current_model()
    outputs = run_rl_stage(ctx.cfg, source, ctx.outputs["data"], ctx.run.stage_dir("rl"), ctx.ahead.pop("rl", None))
    if outputs["early_stop"]:
        print(f"[rl] stopped early after {outputs['rl_steps']} of {outputs['rl_planned_steps']} steps: {outputs['early_stop']}")
    return {**outputs, "from_model": source}
