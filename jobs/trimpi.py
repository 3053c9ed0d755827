"""TriMPI pipeline: model -> data -> VM-CPT -> CoT-SFT -> RL (PolicyRollout) -> eval -> export.

    python jobs/trimpi.py [--config configs/default.yaml] [section.key=value ...]
                          [--stages model,data,...] [--from-stage STAGE] [--dry-run]

Locally it starts Ray on 127.0.0.1; under `ray job submit` it joins that cluster. The config is
validated before any Ray work: a bad key or value exits with code 2 and says what is allowed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _bootstrap import config_or_exit, refuse  # first: puts the repo root on sys.path

from mpi_ray.config.loader import dump_config
from mpi_ray.pipeline import StageContext, ordered, plan_lines, run_stages, with_prerequisites
from mpi_ray.run_dir import RunDir


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the TriMPI pipeline.")
    parser.add_argument("--config", default="configs/default.yaml", help="YAML config (default: the embedded tiny one)")
    parser.add_argument("--stages", help="comma-separated stages to run (default: run.stages of the config)")
    parser.add_argument("--from-stage", help="redo this stage and every later one even if already done")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan, run nothing")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    return parser.parse_intermixed_args(argv)  # overrides may come before or after --stages


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = list(args.overrides)
    if args.stages:
        overrides.append(f"run.stages=[{args.stages}]")
    cfg = config_or_exit(args.config, overrides)
    stages = ordered(cfg.run.stages)
    if args.from_stage and args.from_stage not in stages:
        refuse(f"--from-stage {args.from_stage!r} is not among the stages to run: {stages}")

    redo = tuple(stages[stages.index(args.from_stage):]) if args.from_stage else ()
    run = RunDir.at(cfg)
    if not args.dry_run:  # a dry run changes nothing: no config.yaml written, no stage forgotten
        run = RunDir.create(cfg)
        run.clear_from(list(redo))
    stages = with_prerequisites(run, stages)
    ctx = StageContext(cfg, run)
    print(f"mpi-ray TriMPI run '{cfg.run.name}' in {run.root}")
    print("plan:\n" + "\n".join(plan_lines(ctx, stages, redo)))
    if args.dry_run:
        print("resolved config:\n" + dump_config(cfg))
        return 0
    import ray

    from mpi_ray.cluster import connect

    print(connect(cfg))
    try:
        run_stages(ctx, stages)
    finally:
        ray.shutdown()
    print(f"finished: {', '.join(stages)}; outputs in {run.root}")
    from mpi_ray.timing import write_timing

    timing = write_timing(run.root)  # also appended to report.md, whose tables are printed below
    if "report" not in ctx.outputs:
        print("\n".join(timing))
    if "report" in ctx.outputs:
        from mpi_ray.eval.report import report_tables

        print(f"report: {ctx.outputs['report']}\n" + "\n".join(report_tables(Path(ctx.outputs["report"]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
