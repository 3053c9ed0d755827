"""Can the model see? The perception probe on a pretrained tiny base and on the random-init tiny model.

    python benchmarks/bench_perception_probe.py --base DIR [--count 200]

DIR is a folder `python -m mpi_ray.model.base` wrote (its base_manifest.json gives size, seed, image size).

Balanced yes/no existence questions on held-out scenes, each scene asked once with a yes- and once
with a no-question (half single attributes, half two-attribute conjunctions; chance is 50%); a model
is right when its answer "\\boxed{<gold>}" is likelier than the other one. Prints accuracy and AUC
per model, measured side by side in one process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mpi_ray.data.encode import Encoder
from mpi_ray.model.base import probe_accuracy
from mpi_ray.model.base_data import probe_records
from mpi_ray.model.loading import load_model
from mpi_ray.model.tiny import build_tiny
from mpi_ray.stages.model import resolve_base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="a folder written by python -m mpi_ray.model.base")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = Path(resolve_base(args.base))
    size = json.loads((base / "base_manifest.json").read_text())
    image_size = size["image_size"]
    probes = probe_records(args.count, image_size)
    print(f"perception probe: {args.count} held-out questions, {image_size}px scenes, chance 50%")
    print(f"{'model':<28} {'probe':>7} {'AUC':>6} {'single':>7} {'conj.':>7} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        random_init = build_tiny(Path(tmp) / "init", size["size"], size["seed"], max_pixels=image_size * image_size)
        for name, path in ((f"random init ({size['size']})", random_init), (f"tiny base ({base.name})", base)):
            started = time.perf_counter()
            encoder = Encoder(str(path), max_pixels=image_size * image_size, max_seq_len=4096)
            scores = probe_accuracy(load_model(path), encoder, probes)
            print(f"{name:<28} {scores['probe']:>6.1f}% {scores['probe_auc']:>6.1f} {scores['probe_single']:>6.1f}% "
                  f"{scores['probe_conjunction']:>6.1f}% {time.perf_counter() - started:>8.1f}")


if __name__ == "__main__":
    main()
