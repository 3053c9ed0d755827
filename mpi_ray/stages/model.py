"""Stage `model`: resolve the base model; build the tiny local Qwen2.5-VL when none is named.

A relative local folder (the default's committed `models/tiny-base-xs`) is looked up from the working
directory, then from the repository root, and passed on as an absolute path: learners and engines
run in other processes whose working directory is not the driver's. A folder inside the copy of the
checkout that `ray job submit --working-dir` made is copied into the run directory first: that copy
lives only as long as Ray's cache of it, and a re-submitted job (another copy) reads this stage's
recorded path when it skips the stage.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import ray

from mpi_ray.pipeline import StageContext


@ray.remote(num_cpus=1)
def _build_tiny_task(out: str, size: str, seed: int, min_pixels: int, max_pixels: int) -> str:
    from mpi_ray.model.tiny import build_tiny

    return str(build_tiny(out, size, seed, min_pixels, max_pixels))


REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_base(name_or_path: str) -> str:
    """An absolute path for a local folder; anything else (a hub id) unchanged."""
    for candidate in (Path(name_or_path), REPO_ROOT / name_or_path):
        if candidate.is_dir():
            return str(candidate.resolve())
    return name_or_path


def in_job_working_dir(path: str) -> bool:
    """Inside a Ray job's uploaded working directory (<session>/runtime_resources/working_dir_files/...)."""
    return "runtime_resources" in Path(path).parts


def describe(ctx: StageContext) -> str:
    model = ctx.cfg.model
    if model.name_or_path:
        return f"use base model {model.name_or_path}"
    return f"build tiny Qwen2.5-VL (size {model.tiny.size}, seed {model.tiny.seed}) -> {ctx.run.root / 'model'}"


def run(ctx: StageContext) -> dict[str, Any]:
    model = ctx.cfg.model
    if model.name_or_path:
        base = resolve_base(model.name_or_path)
        if in_job_working_dir(base):
            kept = ctx.run.root / "model"
            shutil.copytree(base, kept, dirs_exist_ok=True)
            base = str(kept)
        return {"model": base}
    task = _build_tiny_task.remote(
        str(ctx.run.root / "model"), model.tiny.size, model.tiny.seed, model.min_pixels, model.max_pixels
    )
    path = ray.get(task)
    return {"model": path}
