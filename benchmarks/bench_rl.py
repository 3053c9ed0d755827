"""RL on the tiny model, side by side in one run: asynchronous vs synchronous steps, the vLLM pool vs
transformers' `generate`, and the cost of PoRo (2G) vs plain G.

    python benchmarks/bench_rl.py [--size xs] [--steps 4] [--prompts 4] [--group 4] [--response 32]

1. RL step time: the real RL stage (Ray Data prompts, 2 vLLM engines, 2 DDP learners, rewards in Ray
   tasks, verified weight sync) with PoRo-GRPO at rollout.max_staleness 1 (the pool samples step s+1
   while the learners train step s) and 0 (strictly on-policy), and plain GRPO at 0 (G samples per
   prompt instead of 2G). A step's time is the steady wall time between the learners' step reports
   (the first step, with engine start-up, excluded).
   `--pinned`: instead, PoRo-GRPO async (1) against sync (0) with one engine and one learner (1 thread
   each), every thread of the engine's process pinned to core 1 and of the learner's to core 0, so that
   overlap has a core to use; with the learner's time waiting for rollouts and publishing weights (the
   weight sync) as shares of its step.
2. Rollout tokens/s on the same prompts, same G, same response limit: the pool of vLLM engines versus
   transformers' `generate` (sampling, num_return_sequences=G) in this process. Warm rates: one call
   of each is made before the timed one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import mpi_ray.cluster  # noqa: F401  (loopback Ray)
import psutil
import ray
import torch
from mpi_ray.config import load_config
from mpi_ray.config.schema import PipelineConfig
from mpi_ray.data.clevr_policy.__main__ import main as generate_clevr
from mpi_ray.data.streams import StreamSpec, stage_dataset
from mpi_ray.model.loading import load_model, load_processor
from mpi_ray.model.tiny import build_tiny
from mpi_ray.rollout.pool import RolloutPool
from mpi_ray.train.rl_trainer import max_images, rl_prompt_ids, run_rl_stage
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
RUNS = [("poro-grpo", 1), ("poro-grpo", 0), ("grpo", 0)]  # (algorithm, max_staleness)
PINNED_CORES = {"ray::RolloutEngine": 1, "ray::RayTrainWorker": 0}  # process title prefix -> core


class Pinner(threading.Thread):
    """Pins every thread of each engine and learner process to its core; re-scans twice a second, since
    the stage starts them (and vLLM and torch start threads) after the benchmark does."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            for proc in psutil.process_iter(["cmdline"]):
                title = " ".join(proc.info["cmdline"] or [])
                core = next((c for prefix, c in PINNED_CORES.items() if title.startswith(prefix)), None)
                if core is None:
                    continue
                try:
                    for thread in proc.threads():
                        os.sched_setaffinity(thread.id, {core})
                except (psutil.Error, OSError):
                    pass  # the process or thread ended meanwhile


def overrides(args: argparse.Namespace, algorithm: str = "poro-grpo") -> list[str]:
    # One optimizer step per RL step (update_batch = every sequence of the step: 2G per prompt with PoRo).
    # The reward is a format pattern the untrained model matches now and then, so advantages are non-zero
    # and every step really updates (the learners' work is the same as with a trained model).
    sequences = args.prompts * args.group * (2 if algorithm.startswith("poro") else 1)
    return [f"rl.algorithm={algorithm}", f"rl.max_steps={args.steps}", f"rl.rollout_batch={args.prompts}",
            f"rl.group_size={args.group}", f"rl.update_batch={sequences}", "rl.micro_batch_per_worker=4",
            "rl.reward.accuracy_weight=0", "rl.reward.format_weight=1", "rl.reward.format_pattern=.*the.*",
            "rollout.engines=2", f"rollout.max_response_len={args.response}", "rollout.max_prompt_len=2048",
            "resources.learner_workers=2"]


def pinned_async_vs_sync(args: argparse.Namespace, model: Path, data: Path, work: Path) -> None:
    shape = ["rollout.engines=1", "resources.learner_workers=1", "rl.workers=1", "resources.cpus_per_engine=1",
             "resources.cpus_per_learner=1"]
    pinner = Pinner()
    pinner.start()
    shares = {}
    try:
        for staleness in (1, 0):
            cfg = load_config(REPO / "configs/default.yaml", overrides(args) + shape + [f"rollout.max_staleness={staleness}"])
            out = work / f"pinned-{staleness}" / "rl"
            run_rl_stage(cfg, str(model), str(data), out)
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]  # steady steps
            wall, _ = steady_step_s(out / "metrics.jsonl")
            shares[staleness] = (wall, sum(r["wait_for_rollouts_s"] for r in rows) / len(rows) / wall,
                                 sum(r["publish_s"] for r in rows) / len(rows) / wall)
            steps = len(rows) + 1
    finally:
        pinner.stopped.set()
    print(f"RL on tiny-{args.size}, PoRo-GRPO, {args.prompts} prompts x G={args.group}, responses <= {args.response} "
          f"tokens, 1 vLLM engine pinned to core 1 + 1 learner pinned to core 0 (1 thread each), {steps} steps "
          "(the first left out)")
    for staleness, label in ((1, "async (max_staleness 1)"), (0, "sync  (max_staleness 0)")):
        wall, wait, publish = shares[staleness]
        print(f"  {label}: {wall:6.2f} s/step; waiting for rollouts {100 * wait:5.1f}%, weight sync {100 * publish:5.1f}% of the step")
    print(f"  async / sync step time: {shares[1][0] / shares[0][0]:.2f}")


def steady_step_s(metrics_file: Path) -> tuple[float, float]:
    """(wall seconds per step after the first, mean rollout tokens per step)."""
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    wall = (rows[-1]["time"] - rows[0]["time"]) / max(len(rows) - 1, 1)
    return wall, sum(r["rollout_tokens"] for r in rows) / len(rows)


def rl_step_times(args: argparse.Namespace, model: Path, data: Path, work: Path) -> dict[tuple[str, int], tuple[float, float]]:
    results = {}
    for algorithm, staleness in RUNS:
        cfg = load_config(REPO / "configs/default.yaml", overrides(args, algorithm) + [f"rollout.max_staleness={staleness}"])
        out = work / f"{algorithm}-{staleness}" / "rl"
        run_rl_stage(cfg, str(model), str(data), out)
        results[(algorithm, staleness)] = steady_step_s(out / "metrics.jsonl")
    return results


def rl_prompts(cfg: PipelineConfig, model: Path, data: Path, count: int) -> list[dict[str, Any]]:
    spec = StreamSpec(stage="rl", model_path=str(model), min_pixels=cfg.model.min_pixels,
                      max_pixels=cfg.model.max_pixels, max_seq_len=cfg.rollout.max_prompt_len)
    rows = stage_dataset(str(data), "train", spec, sample_ids=rl_prompt_ids(str(data), "non_cot")).take(count)
    return [{"prompt": row["prompt"], "images": row["images"]} for row in rows]


def vllm_tokens_per_s(cfg: PipelineConfig, model: Path, data: Path, prompts: list[dict[str, Any]], group: int) -> float:
    pool = RolloutPool(str(model), cfg.rollout, cfg.resources, cfg.run.seed, max_images(str(data)))
    try:
        pool.generate(prompts, group)  # warm-up
        start = time.perf_counter()
        samples = pool.generate(prompts, group)
        seconds = time.perf_counter() - start
    finally:
        pool.shutdown()
    return sum(len(s["token_ids"]) for per_prompt in samples for s in per_prompt) / seconds


def hf_tokens_per_s(cfg: PipelineConfig, model_dir: Path, prompts: list[dict[str, Any]], group: int) -> float:
    torch.set_num_threads(2)
    model = load_model(str(model_dir)).eval()
    processor = load_processor(str(model_dir), cfg.model.min_pixels, cfg.model.max_pixels)
    eos = processor.tokenizer.eos_token_id

    def generate_all() -> int:
        tokens = 0
        for prompt in prompts:
            images = [Image.open(io.BytesIO(blob)).convert("RGB") for blob in prompt["images"]]
            inputs = processor(text=[prompt["prompt"]], images=images or None, return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**inputs, do_sample=True, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                                     max_new_tokens=cfg.rollout.max_response_len, num_return_sequences=group,
                                     pad_token_id=processor.tokenizer.pad_token_id)
            for row in out[:, inputs["input_ids"].shape[1]:].tolist():
                tokens += next((i + 1 for i, token in enumerate(row) if token == eos), len(row))
        return tokens

    generate_all()  # warm-up
    start = time.perf_counter()
    tokens = generate_all()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="xs", choices=["xs", "s", "m"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=4, help="rl.rollout_batch")
    parser.add_argument("--group", type=int, default=4, help="G")
    parser.add_argument("--response", type=int, default=32, help="rollout.max_response_len")
    parser.add_argument("--pinned", action="store_true", help="only async vs sync, 1 engine + 1 learner, each on its own core")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_rl_"))
    model = build_tiny(work / "model", args.size)
    data = work / "data"
    generate_clevr(["--depth", "2", "--variant", "M", "--out", str(data), "--policies", "2", "--train-per-policy", "16",
                    "--test", "2", "--general", "0", "--cot-fraction", "0.25", "--image-size", "112", "--seed", "3"])
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    if args.pinned:
        try:
            pinned_async_vs_sync(args, model, data, work)
        finally:
            ray.shutdown()
        return
    try:
        steps = rl_step_times(args, model, data, work)
        cfg = load_config(REPO / "configs/default.yaml", overrides(args))
        prompts = rl_prompts(cfg, model, data, 2 * args.prompts)
        vllm_rate = vllm_tokens_per_s(cfg, model, data, prompts, args.group)
    finally:
        ray.shutdown()
    hf_rate = hf_tokens_per_s(cfg, model, prompts, args.group)

    async_s, _ = steps[("poro-grpo", 1)]
    sync_s, poro_tokens = steps[("poro-grpo", 0)]
    plain_s, plain_tokens = steps[("grpo", 0)]
    print(f"RL on tiny-{args.size}: {args.prompts} prompts x G={args.group}, responses <= {args.response} tokens, "
          f"2 vLLM engines, 2 DDP learners, 2 CPU cores in all; steady wall time per step over {args.steps} steps")
    print(f"  PoRo-GRPO async (max_staleness 1): {async_s:6.2f} s/step")
    print(f"  PoRo-GRPO sync  (max_staleness 0): {sync_s:6.2f} s/step")
    print(f"  GRPO      sync  (plain G)        : {plain_s:6.2f} s/step")
    print(f"  async / sync step time:            {async_s / sync_s:.2f}")
    print(f"  PoRo (2G) / GRPO (G) step time:    {sync_s / plain_s:.2f}  (rollout tokens per step "
          f"{poro_tokens:.0f} vs {plain_tokens:.0f})")
    print(f"Rollout generation, {len(prompts)} policy-free prompts x G={args.group}, warm:")
    print(f"  vLLM pool (2 engines):  {vllm_rate:8.0f} tokens/s")
    print(f"  transformers generate:  {hf_rate:8.0f} tokens/s")
    print(f"  vLLM / transformers:    {vllm_rate / hf_rate:.2f}")


if __name__ == "__main__":
    main()
