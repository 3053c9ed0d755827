"""The paper's Table 2 rows on one config, over several seeds, sharing checkpoints where rows share a
prefix (mpi_ray/ablation.py): mean +- std per row into <out>/report.md with a bar plot.

    python jobs/ablate.py [--config configs/default.yaml] [--seeds 0,1,2] [--rows base,cot_sft,...]
                          [--out runs/ablation] [--dry-run] [--report-only] [section.key=value ...]

Rows: base (In-Context), direct_sft, cot_sft, cpt_cot_sft, grpo, poro_grpo, dapo, poro_dapo.
Locally it starts Ray on 127.0.0.1; under `ray job submit` it joins that cluster. Re-running the same
command skips every stage already done (each node's run directory keeps its stage markers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _bootstrap import config_or_exit, refuse  # first: puts the repo root on sys.path


def main(argv: list[str] | None = None) -> int:
    from mpi_ray.ablation import ROWS, needed, node_config
    from mpi_ray.config import ConfigError

    parser = argparse.ArgumentParser(description="Seeded ablation of the TriMPI rows (paper Table 2).")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated run.seed values")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default: all of {', '.join(ROWS)})")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--dry-run", action="store_true", help="print the nodes to train, run nothing")
    parser.add_argument("--report-only", action="store_true", help="rewrite report.md and the plot from <out>/results.json")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides for every row")
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
        rows = args.rows.split(",")
        nodes = needed(rows)
    except ValueError as error:
        refuse(f"--seeds / --rows: {error}")
    out = Path(args.out).resolve()
    if args.report_only:
        from mpi_ray.ablation import write_report

        if not (out / "results.json").exists():
            refuse(f"{out / 'results.json'} does not exist: run the ablation first")
        print(f"report: {write_report(out)}")
        return 0
    cfg = config_or_exit(args.config, list(args.overrides))  # every row's config is this one plus its own keys
    for seed in seeds:  # validated up front: a bad row config fails now, not an hour in
        for node in nodes:
            try:
                node_config(args.config, list(args.overrides), out, node, seed)
            except ConfigError as error:
                refuse(f"row {node.name}, seed {seed}: {error}")
    print(f"mpi-ray ablation: rows {', '.join(rows)}; seeds {', '.join(map(str, seeds))} -> {out}")
    print("nodes: " + ", ".join(f"{n.name}({n.stage or 'model+data'})" for n in nodes))
    if args.dry_run:
        return 0

    import ray

    from mpi_ray.ablation import run_ablation
    from mpi_ray.cluster import connect
    from mpi_ray.eval.report import report_tables

    print(connect(cfg))
    try:
        report = run_ablation(args.config, list(args.overrides), seeds, rows, out)
    finally:
        ray.shutdown()
    print(f"report: {report}\n" + "\n".join(report_tables(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
