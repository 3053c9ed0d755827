"""Stages `cpt` (VM-CPT) and `sft` (CoT or Direct SFT): one learner loop on Ray Train, HF export out."""

from __future__ import annotations

from typing import Any

from mpi_ray.pipeline import StageContext
from mpi_ray.train.trainer import run_learner_stage


def describe_stage(ctx: StageContext, stage: str) -> str:
    stage_cfg = getattr(ctx.cfg, stage)
    workers = stage_cfg.workers or ctx.cfg.resources.learner_workers
    what = "VM-CPT (policy + CoT, loss on every non-visual token)" if stage == "cpt" else f"{stage_cfg.target} SFT (loss on the response)"
    tuning = f"LoRA r={stage_cfg.lora.rank}" if stage_cfg.lora.enabled else "full parameters"
    return f"{what}, {tuning}, {workers} x {ctx.cfg.learner.strategy} workers -> {ctx.run.stage_dir(stage) / 'hf'}"


def run_stage(ctx: StageContext, stage: str) -> dict[str, Any]:
    source = ctx.current_model()
    outputs = run_learner_stage(ctx.cfg, stage, source, ctx.outputs["data"], ctx.run.stage_dir(stage))
    return {**outputs, "from_model": source}
