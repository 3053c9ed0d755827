"""Evaluate one checkpoint on the TriMPI suites (batch inference: Ray Data + vLLM).

    python jobs/evaluate.py --checkpoint DIR --data DIR [--suite policy_free,in_context,...]
                            [--config configs/default.yaml] [--out DIR] [section.key=value ...]

Suites: policy_free, in_context, override, referral, efficiency, forgetting (see mpi_ray/eval/suites.py).
Writes <out>/results.json and <out>/responses-checkpoint.jsonl and prints the scores. Locally it starts
Ray on 127.0.0.1; under `ray job submit` it joins that cluster. The pipeline's `eval` stage runs the
same code on every checkpoint of a run and writes the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _bootstrap import config_or_exit, refuse  # first: puts the repo root on sys.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on the TriMPI suites.")
    parser.add_argument("--checkpoint", required=True, help="HF model folder (a stage's hf/ export)")
    parser.add_argument("--data", required=True, help="dataset folder (shards + manifest)")
    parser.add_argument("--suite", help="comma-separated suites (default: eval.suites of the config)")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--out", help="output folder (default: <checkpoint>/../eval-<suites>)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    overrides = list(args.overrides) + ([f"eval.suites=[{args.suite}]"] if args.suite else [])
    cfg = config_or_exit(args.config, overrides)
    for name, path in (("--checkpoint", args.checkpoint), ("--data", args.data)):
        if not Path(path).is_dir():
            refuse(f"{name} {path} is not a folder")
    out = Path(args.out or Path(args.checkpoint).resolve().parent / "eval")

    import ray

    from mpi_ray.cluster import connect
    from mpi_ray.eval.runner import evaluate_checkpoint

    print(connect(cfg))
    try:
        summary = evaluate_checkpoint(cfg, args.checkpoint, args.data, list(cfg.eval.suites), out, "checkpoint",
                                      Path(args.checkpoint).name)
    finally:
        ray.shutdown()
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["suites"], indent=2))
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
