"""Stage `model`: resolve the base model; build the tiny local Qwen2.5-VL when none is named."""

from __future__ import annotations

from typing import Any

import ray

from mpi_ray.pipeline import StageContext


@ray.remote(num_cpus=1)
def _build_tiny_task(out: str, size: str, seed: int, min_pixels: int, max_pixels: int) -> str:
    from mpi_ray.model.tiny import build_tiny

    return str(build_tiny(out, size, seed, min_pixels, max_pixels))


def describe(ctx: StageContext) -> str:
    model = ctx.cfg.model
    if model.name_or_path:
        return f"use base model {model.name_or_path}"
    return f"build tiny Qwen2.5-VL (size {model.tiny.size}, seed {model.tiny.seed}) -> {ctx.run.root / 'model'}"


def run(ctx: StageContext) -> dict[str, Any]:
    model = ctx.cfg.model
    if model.name_or_path:
        return {"model": model.name_or_path}
    task = _build_tiny_task.remote(
        str(ctx.run.root / "model"), model.tiny.size, model.tiny.seed, model.min_pixels, model.max_pixels
    )
    path = ray.get(task)
    return {"model": path}
