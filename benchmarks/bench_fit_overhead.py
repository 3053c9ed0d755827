"""What one Ray Train fit costs beyond its work: a TorchTrainer whose loop sleeps `--work` seconds, on a
local cluster, at Ray Train's default controller poll interval (2 s) and at mpi-ray's (0.5 s,
mpi_ray/cluster.py), alternated so that both see the same machine. Prints each fit's wall time.

    python benchmarks/bench_fit_overhead.py [--reps 3] [--workers 1] [--work 1.0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import ray


def sleeping_loop(config: dict) -> None:
    time.sleep(config["work"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--work", type=float, default=1.0)
    args = parser.parse_args()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from mpi_ray.cluster import TRAIN_POLL_INTERVAL_S

    ray.init(address="local", num_cpus=8, include_dashboard=False, _node_ip_address="127.0.0.1")
    walls: dict[str, list[float]] = {}
    try:
        for rep in range(args.reps):
            for interval in ("2.0", TRAIN_POLL_INTERVAL_S):
                os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = interval  # read by the next fit's controller
                start = time.time()
                TorchTrainer(sleeping_loop, train_loop_config={"work": args.work},
                             scaling_config=ScalingConfig(num_workers=args.workers),
                             run_config=RunConfig(name="overhead", storage_path=tempfile.mkdtemp())).fit()
                walls.setdefault(interval, []).append(time.time() - start)
                print(f"rep {rep}: poll interval {interval} s: fit {walls[interval][-1]:.2f} s for {args.work:.1f} s of work",
                      flush=True)
    finally:
        ray.shutdown()
    for interval, values in walls.items():
        print(f"poll interval {interval} s: median fit {statistics.median(values):.2f} s, "
              f"overhead {statistics.median(values) - args.work:.2f} s ({args.workers} worker(s), {args.reps} fits)")


if __name__ == "__main__":
    main()
