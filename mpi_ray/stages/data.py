"""Stage `data`: use the shards in data.dir, or generate ClevrPolicy / GTAPolicy into the run directory.

Generation runs as a Ray task through the same CLI functions a user runs by hand, so the stage and
`python -m mpi_ray.data.<dataset>` cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from mpi_ray.config.schema import DataConfig
from mpi_ray.data.shards import read_manifest
from mpi_ray.model.loading import is_local
from mpi_ray.pipeline import StageContext


def generator_argv(data: DataConfig, out: str, tokenizer_dir: str | None) -> tuple[str, list[str]]:
    """(CLI module, its arguments) for the configured dataset."""
    if data.dataset == "gta_policy":
        source = ["--from-gta", data.gta.from_gta] if data.gta.from_gta else ["--train", str(data.gta.train), "--test", str(data.gta.test)]
        return "mpi_ray.data.gta_policy.__main__", ["--out", out, "--seed", str(data.seed), *source]
    clevr = data.clevr
    argv = [
        "--depth", str(clevr.depth), "--variant", clevr.variant, "--out", out, "--policies", str(clevr.policies),
        "--train-per-policy", str(clevr.train_per_policy), "--test", str(clevr.test),
        "--val", str(clevr.val), "--general", str(clevr.general),
        "--general-replay", str(clevr.general_replay), "--general-think", clevr.general_think,
        "--cot-fraction", str(clevr.cot_fraction), "--image-size", str(clevr.image_size), "--seed", str(data.seed),
        "--overwrite",
    ]
    if tokenizer_dir:
        argv += ["--tokenizer", tokenizer_dir]
    return "mpi_ray.data.clevr_policy.__main__", argv


@ray.remote(num_cpus=1)
def _generate_task(module: str, argv: list[str]) -> tuple[int, str]:
    """The CLI's exit code and what it printed: its summary is for a user at a terminal; in the
    pipeline the driver says the counts in one line, and the summary only helps when it failed."""
    import contextlib
    import importlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = importlib.import_module(module).main(argv)
    return code, printed.getvalue()


def describe(ctx: StageContext) -> str:
    data = ctx.cfg.data
    if data.dir:
        return f"use dataset shards in {data.dir}"
    what = f"ClevrPolicy-{data.clevr.variant} N={data.clevr.depth}" if data.dataset == "clevr_policy" else "GTAPolicy"
    return f"generate {what} (seed {data.seed}) -> {ctx.run.root / 'data'}"


def run(ctx: StageContext) -> dict[str, Any]:
    data = ctx.cfg.data
    if data.dir:
        read_manifest(data.dir)  # fails early, with the path, when it is not a dataset folder
        return {"data": str(Path(data.dir).resolve())}
    out = str(ctx.run.root / "data")
    model = ctx.outputs.get("model")
    tokenizer = model if model and is_local(model) else None
    module, argv = generator_argv(data, out, tokenizer)
    code, printed = ray.get(_generate_task.remote(module, argv))
    if code != 0:
        raise RuntimeError(f"dataset generation failed with exit code {code}: python -m {module} {' '.join(argv)}\n{printed}")
    manifest = read_manifest(out)
    return {"data": out, "counts": manifest.get("counts", {})}
