"""Learner tokens/s on the tiny model: DDP vs DeepSpeed ZeRO-2, 1 vs 2 workers, side by side in one run.

    python benchmarks/bench_learner.py [--size s] [--steps 8] [--batch 2]

Each configuration trains VM-CPT for --steps micro-steps on the same small ClevrPolicy set through
the real Ray Train path (Ray Data streams, TorchTrainer). The rate is steady state: tokens between
the second and the last report over the time between them (start-up and the first step excluded).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import mpi_ray.cluster  # noqa: F401  (loopback Ray)
import ray
from mpi_ray.config import load_config
from mpi_ray.data.clevr_policy.__main__ import main as generate_clevr
from mpi_ray.model.tiny import build_tiny
from mpi_ray.train.trainer import run_learner_stage

REPO = Path(__file__).resolve().parent.parent
CONFIGS = [("ddp", 1), ("ddp", 2), ("deepspeed", 1), ("deepspeed", 2)]


def steady_tokens_per_s(metrics_file: Path) -> float:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    first, last = rows[1], rows[-1]
    return (last["tokens"] - first["tokens"]) / max(last["time"] - first["time"], 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="s", choices=["xs", "s", "m"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_learner_"))
    model = build_tiny(work / "model", args.size)
    generate_clevr(["--depth", "2", "--variant", "T", "--out", str(work / "data"), "--policies", "2",
                    "--train-per-policy", "32", "--test", "4", "--general", "0", "--cot-fraction", "1.0",
                    "--image-size", "112"])
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    results = {}
    for strategy, workers in CONFIGS:
        cfg = load_config(REPO / "configs/default.yaml", [
            f"learner.strategy={strategy}", f"resources.learner_workers={workers}", f"cpt.max_steps={args.steps}",
            f"cpt.batch_size_per_worker={args.batch}", "cpt.max_seq_len=4096", f"cpt.checkpoint_every={args.steps}",
            f"resources.cpus_per_learner={2 // workers}",
        ])
        out = work / f"{strategy}-{workers}" / "cpt"
        run_learner_stage(cfg, "cpt", str(model), str(work / "data"), out)
        results[(strategy, workers)] = steady_tokens_per_s(out / "metrics.jsonl")
    ray.shutdown()
    print(f"VM-CPT, tiny-{args.size}, batch {args.batch} per worker, {args.steps} micro-steps, 2 CPU cores in all")
    for (strategy, workers), rate in results.items():
        print(f"  {strategy:<9} {workers} worker(s): {rate:8.0f} tokens/s")
    print(f"  ZeRO-2 / DDP at 2 workers: {results[('deepspeed', 2)] / results[('ddp', 2)]:.2f}")
    print(f"  2 / 1 workers (DDP):       {results[('ddp', 2)] / results[('ddp', 1)]:.2f}")


if __name__ == "__main__":
    main()
