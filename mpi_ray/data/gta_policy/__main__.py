"""Build the GTAPolicy dataset: synthetic (default, offline) or from a local copy of the GTA benchmark.

    python -m mpi_ray.data.gta_policy --out DIR [--train 451] [--test 106] [--seed 0]
    python -m mpi_ray.data.gta_policy --from-gta GTA_DIR --out DIR [--seed 0] [--test-fraction 0.19]

Writes train / test / override Parquet shards in the sample schema and manifest.json, then prints
the counts and the rule-coverage table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mpi_ray.data.gta_policy.dataset import build_splits, write_dataset
from mpi_ray.data.gta_policy.generator import PAPER_TEST, PAPER_TRAIN, generate_split
from mpi_ray.data.gta_policy.gta_loader import DATASET_FILE, DEFAULT_TEST_FRACTION, load_gta
from mpi_ray.data.gta_policy.rules import DEFAULT_OVERRIDE_TOOLS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mpi_ray.data.gta_policy", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder for the shards and manifest.json")
    parser.add_argument("--from-gta", type=Path, metavar="DIR", help=f"convert a GTA release folder ({DATASET_FILE} + image/)")
    parser.add_argument("--train", type=int, default=PAPER_TRAIN, help="synthetic train instances (paper: 451)")
    parser.add_argument("--test", type=int, default=PAPER_TEST, help="synthetic test instances (paper: 106)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                        help="--from-gta only: share of GTA queries in the test split (paper: 106/557)")
    args = parser.parse_args(argv)
    if args.train < 0 or args.test < 0:
        parser.error("--train and --test must be >= 0")
    if not 0.0 <= args.test_fraction <= 1.0:
        parser.error("--test-fraction must be within [0, 1]")
    if args.from_gta is not None and not (args.from_gta / DATASET_FILE).is_file():
        parser.error(f"--from-gta: no {DATASET_FILE} in {args.from_gta}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_gta is not None:
        train, test, stats = load_gta(args.from_gta, args.seed, args.test_fraction)
        info = {"source": "gta", "gta_dir": str(args.from_gta), **stats}
        prefix = "gta"
    else:
        train, test = generate_split("train", args.train, args.seed), generate_split("test", args.test, args.seed)
        info = {"source": "synthetic"}
        prefix = "gta_policy"
    splits = build_splits(train, test, prefix)
    manifest = write_dataset(args.out, splits, {**info, "seed": args.seed, "override_tools": list(DEFAULT_OVERRIDE_TOOLS)})
    print(f"wrote {manifest['counts']} to {args.out} ({manifest['override_changed']} override answers changed)")
    print(manifest["coverage_markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
