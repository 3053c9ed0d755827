"""The stage plan: which stages run, in which order, from which inputs; markers make re-runs resume.

The stages and their order are schema.STAGES; stage <name> is the module mpi_ray.stages.<name>, with
`describe(ctx) -> str` and `run(ctx) -> outputs`; a stage's outputs (e.g. {"model": path}) become the
inputs of the stages after it. A stage may also have `start_ahead(ctx)`, called as the stage before it
starts: what it returns (with a `release()`) waits in ctx.ahead[<name>] for the stage's run, and is
released at the end if the stage did not take it. A stage may leave something there for a later one
the same way (RL hands its engines to eval).
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from mpi_ray.config.schema import STAGES, PipelineConfig
from mpi_ray.run_dir import RunDir
from mpi_ray.trackers import publish_stage


@dataclass
class StageContext:
    cfg: PipelineConfig
    run: RunDir
    outputs: dict[str, Any] = field(default_factory=dict)  # merged outputs of the stages so far
    ahead: dict[str, Any] = field(default_factory=dict)  # what a stage started while the one before it ran
    # The driver's working directory, taken before Ray connects: under `ray job submit` Ray may delete and
    # re-unpack it as soon as the first actor starts, and then os.getcwd() raises (see `reenter`).
    home: str = field(default_factory=os.getcwd)

    def current_model(self) -> str:
        """The newest model: the last stage's HF export, else the base model."""
        if "model" not in self.outputs:
            raise RuntimeError("no model yet: the 'model' stage must run first")
        return self.outputs["model"]


PREREQUISITES = ("model", "data")  # what every later stage reads; built on demand when missing
TRAINED_STAGES = ("cpt", "sft", "rl")  # the stages that produce a new model


def ordered(stages: list[str]) -> list[str]:
    return sorted(dict.fromkeys(stages), key=STAGES.index)


def with_prerequisites(run: RunDir, stages: list[str]) -> list[str]:
    """Add `model` and `data` in front when a later stage needs them and no earlier run made them."""
    needs = any(stage not in PREREQUISITES for stage in stages)
    missing = [p for p in PREREQUISITES if needs and p not in stages and not run.completed(p)]
    return ordered(missing + stages)


def stage_module(stage: str):
    return importlib.import_module(f"mpi_ray.stages.{stage}")


def plan_lines(ctx: StageContext, stages: list[str], redo: tuple[str, ...] = ()) -> list[str]:
    """One line per stage; `redo` (--from-stage) are run again even where a marker says done."""
    lines = []
    for stage in stages:
        status = "done (skip)" if ctx.run.completed(stage) and stage not in redo else "to run"
        lines.append(f"  {stage:<7} {status:<16} {stage_module(stage).describe(ctx)}")
    return lines


def load_earlier_outputs(ctx: StageContext, stages: list[str]) -> None:
    """Outputs of completed stages before the first one asked for (e.g. `--stages sft` after cpt)."""
    for stage in STAGES:
        if stage == stages[0]:
            return
        done = ctx.run.completed(stage)
        if done:
            ctx.outputs.update(done["outputs"])


def reenter(directory: str) -> None:
    """Make `directory` the working directory again if the one the process is in was deleted.

    Ray's runtime-env agent unpacks a job's working_dir afresh (rmtree, then unzip to the same path)
    when an actor with a new env over the same package starts on a node that shares the path, e.g. a
    second raylet on the same machine. The driver, started in that folder, is then left in a deleted
    directory: every later `os.getcwd()` raises (transformers calls it on import), relative paths no
    longer resolve. The same path holds the same files again, so going back in is enough."""
    try:
        os.getcwd()
    except FileNotFoundError:
        os.chdir(directory)


def run_stages(ctx: StageContext, stages: list[str], log=print) -> None:
    """Run stages in order, skipping completed ones."""
    try:
        _run_in_order(ctx, stages, log)
    finally:
        for started in ctx.ahead.values():
            if started is not None:
                started.release()
        ctx.ahead.clear()


def _start_next_ahead(ctx: StageContext, upcoming: list[str]) -> None:
    """The next stage that will run, if it starts something ahead (stage.start_ahead)."""
    following = next((stage for stage in upcoming if not ctx.run.completed(stage)), None)
    starter = getattr(stage_module(following), "start_ahead", None) if following else None
    if starter is not None and following not in ctx.ahead:
        ctx.ahead[following] = starter(ctx)


def _run_in_order(ctx: StageContext, stages: list[str], log) -> None:
    load_earlier_outputs(ctx, stages)
    for index, stage in enumerate(stages):
        reenter(ctx.home)
        done = ctx.run.completed(stage)
        if done:
            ctx.outputs.update(done["outputs"])
            log(f"[{stage}] already done, skipping (remove {ctx.run.marker(stage)} or use --from-stage to redo)")
            continue
        module = stage_module(stage)
        log(f"[{stage}] {module.describe(ctx)}")
        start = time.time()
        _start_next_ahead(ctx, stages[index + 1:])
        outputs = module.run(ctx)
        ctx.outputs.update(outputs)
        ctx.run.mark_done(stage, outputs, time.time() - start)
        log(f"[{stage}] done in {time.time() - start:.1f}s: {outputs}")
        tracked = publish_stage(ctx.run.root, stage, ctx.cfg.run.trackers)
        if tracked:
            log(f"[{stage}] metrics for TensorBoard: {tracked}")
