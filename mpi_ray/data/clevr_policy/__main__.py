"""CLI: python -m mpi_ray.data.clevr_policy --depth N --variant T|M --out DIR [options].

Defaults generate a small CPU set in seconds; paper scale is
    --policies 10 --train-per-policy 2000 --test 2000 --image-size 480x320
"""

from __future__ import annotations

import argparse
import json
import sys

from mpi_ray.data.clevr_policy.generator import VARIANTS, GeneratorConfig, generate


def parse_image_size(text: str) -> tuple[int, int]:
    """'128' -> (128, 128); '480x320' -> (480, 320) (width x height)."""
    try:
        width, _, height = text.lower().partition("x")
        return int(width), int(height or width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or WxH, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    defaults = GeneratorConfig(depth=6, variant="T")
    parser = argparse.ArgumentParser(prog="python -m mpi_ray.data.clevr_policy", description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, required=True, help="decision-tree depth N (paper: 2, 4, 6)")
    parser.add_argument("--variant", choices=VARIANTS, required=True, help="T: text policy; M: some values as pictures")
    parser.add_argument("--out", required=True, help="output folder for shards and manifest.json")
    parser.add_argument("--policies", type=int, default=defaults.policies)
    parser.add_argument("--train-per-policy", type=int, default=defaults.train_per_policy,
                        help="training images per policy (>= the leaves of each tree)")
    parser.add_argument("--test", type=int, default=defaults.test, help="test instances over all policies")
    parser.add_argument("--val", type=int, default=defaults.val,
                        help="validation instances over all policies, for choosing hyper-parameters (eval.split=val)")
    parser.add_argument("--general", type=int, default=defaults.general, help="policy-free attribute questions")
    parser.add_argument("--general-replay", type=int, default=defaults.general_replay,
                        help="policy-free questions with a CoT in the train split (CoT-SFT replay; 0: the paper's setting)")
    parser.add_argument("--general-think", choices=("summary", "echo"), default=defaults.general_think,
                        help="the replay rows' think: what the image holds, or the asked values echoed")
    parser.add_argument("--cot-fraction", type=float, default=defaults.cot_fraction,
                        help="share of training samples that carry a CoT target")
    parser.add_argument("--image-size", type=parse_image_size, default=(defaults.image_width, defaults.image_height),
                        help="N or WxH (default 128)")
    parser.add_argument("--crop-size", type=int, default=defaults.crop_size,
                        help="-M picture side in pixels (default: half the smaller image side, at least 64)")
    parser.add_argument("--image-value-fraction", type=float, default=defaults.image_value_fraction,
                        help="-M: share of conditions whose value is shown as a picture")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--tokenizer", default=None, help="local Hugging Face tokenizer folder for policy token lengths")
    parser.add_argument("--shard-size", type=int, default=512, help="rows per Parquet shard")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    width, height = args.image_size
    config = GeneratorConfig(
        depth=args.depth,
        variant=args.variant,
        policies=args.policies,
        train_per_policy=args.train_per_policy,
        test=args.test,
        val=args.val,
        general=args.general,
        general_replay=args.general_replay,
        general_think=args.general_think,
        cot_fraction=args.cot_fraction,
        image_width=width,
        image_height=height,
        crop_size=args.crop_size,
        image_value_fraction=args.image_value_fraction,
        seed=args.seed,
    )
    try:
        manifest = generate(config, args.out, tokenizer_dir=args.tokenizer, shard_size=args.shard_size, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    summary = {
        "dataset": manifest["dataset"],
        "out": args.out,
        "counts": manifest["counts"],
        "train_with_cot": manifest["splits"]["train"]["with_cot"],
        "distinct_answers": {split: manifest["splits"][split]["distinct_answers"] for split in ("train", "test", "override")},
        "leaves_per_policy": sorted({policy["leaves"] for policy in manifest["policies"]}),
        f"policy_length ({manifest['policy_length_unit']})": manifest["policy_length_stats"],
    }
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
