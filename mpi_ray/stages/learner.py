"""Stages `cpt` (VM-CPT) and `sft` (CoT or Direct SFT): one learner loop on Ray Train, HF export out."""

from __future__ import annotations

from typing import Any

from mpi_ray.pipeline import StageContext
from mpi_ray.train.trainer import learner_stream_spec, run_learner_stage


def describe_stage(ctx: StageContext, stage: str) -> str:
    stage_cfg = getattr(ctx.cfg, stage)
    workers = stage_cfg.workers or ctx.cfg.resources.learner_workers
    what = "VM-CPT (policy + CoT, loss on every non-visual token)" if stage == "cpt" else f"{stage_cfg.target} SFT (loss on the response)"
    tuning = f"LoRA r={stage_cfg.lora.rank}" if stage_cfg.lora.enabled else "full parameters"
    return f"{what}, {tuning}, {workers} x {ctx.cfg.learner.strategy} workers -> {ctx.run.stage_dir(stage) / 'hf'}"


def run_stage(ctx: StageContext, stage: str) -> dict[str, Any]:
    source = ctx.current_model()
    warmed = ctx.ahead.pop(stage, None)  # its processes stay in Ray's pool; only their submitter goes with it
    try:
        outputs = run_learner_stage(ctx.cfg, stage, source, ctx.outputs["data"], ctx.run.stage_dir(stage))
    finally:
        if warmed is not None:
            warmed.release()
    return {**outputs, "from_model": source}


def start_learner_ahead(ctx: StageContext, stage: str) -> Any:
    """Called as the stage before this one starts: warm data.warm_encode_workers encoding processes
    (mpi_ray/data/warm.py) for the model this stage will most likely start from; None when off."""
    count = ctx.cfg.data.warm_encode_workers
    if not count or "model" not in ctx.outputs:
        return None
    from mpi_ray.data.warm import WarmEncoders

    return WarmEncoders(learner_stream_spec(ctx.cfg, stage, ctx.current_model()), count)
