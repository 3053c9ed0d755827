"""Stage `rl`: GRPO / DAPO / PoRo-GRPO / PoRo-DAPO from the newest model (mpi_ray/train/rl_trainer.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mpi_ray.pipeline import StageContext
from mpi_ray.train.rl_trainer import max_images, rl_stream_spec, run_rl_stage


def describe(ctx: StageContext) -> str:
    rl, rollout = ctx.cfg.rl, ctx.cfg.rollout
    workers = rl.workers or ctx.cfg.resources.learner_workers
    return (f"{rl.algorithm} (full parameters), {rollout.engines} vLLM rollout engines, {workers} x "
            f"{ctx.cfg.learner.strategy} learners, max_staleness {rollout.max_staleness} -> {ctx.run.stage_dir('rl') / 'hf'}")


@dataclass
class Ahead:
    """What starts while the stage before RL runs: the pool's vLLM engines (rollout.prestart; they go on to
    the eval stage afterwards) and the producer's encoding process (data.warm_encode_workers)."""

    engines: Any = None  # StartedEngines
    encoders: Any = None  # WarmEncoders

    def release(self) -> None:
        for part in (self.engines, self.encoders):
            if part is not None:
                part.release()


def start_ahead(ctx: StageContext) -> Ahead | None:
    """Called as the stage before this one starts, from that stage's input model: with rollout.prestart
    launch the rollout engines (mpi_ray/rollout/prestart.py), and warm the producer's encoding process
    (mpi_ray/data/warm.py)."""
    if "data" not in ctx.outputs or "model" not in ctx.outputs:
        return None
    ahead = Ahead()
    if ctx.cfg.rollout.prestart:
        from mpi_ray.rollout.prestart import start_engines  # imports vLLM's settings only when used

        print(f"[rl] starting {ctx.cfg.rollout.engines} rollout engine(s) ahead, beside the stage before (rollout.prestart)",
              flush=True)
        ahead.engines = start_engines(ctx.cfg, ctx.current_model(), max_images(ctx.outputs["data"]))
    if ctx.cfg.data.warm_encode_workers:
        from mpi_ray.data.warm import WarmEncoders

        ahead.encoders = WarmEncoders(rl_stream_spec(ctx.cfg, ctx.current_model()), ctx.cfg.data.warm_encode_workers,
                                      ray_train=False)
    return ahead


def run(ctx: StageContext) -> dict[str, Any]:
    source = ctx.current_model()
    ahead = ctx.ahead.pop("rl", None)
    try:
        outputs = run_rl_stage(ctx.cfg, source, ctx.outputs["data"], ctx.run.stage_dir("rl"), ahead and ahead.engines)
        if ahead is not None and ahead.engines is not None:
            # The engines hold the final weights: the eval stage swaps its checkpoints into them instead of
            # starting its own (released at the pipeline's end if no eval stage follows)
            ctx.ahead["eval"] = ahead.engines.handed_on(outputs["model"])
    finally:
        if ahead is not None:  # also when the stage failed before its pool took the engines (release is idempotent)
            ahead.release()
    if outputs["early_stop"]:
        print(f"[rl] stopped early after {outputs['rl_steps']} of {outputs['rl_planned_steps']} steps: {outputs['early_stop']}")
    return {**outputs, "from_model": source}
