"""mpi-ray's RL stage side by side with TRL's GRPOTrainer: the same tiny Qwen2.5-VL, the same ClevrPolicy
prompts with their images, the same reward, G, response cap, update batch, lr, KL and temperature.

    uv sync --frozen --extra cpu --group bench      # or: make bench-env (TRL is not in the default environment)
    python benchmarks/bench_vs_trl.py [--sizes xs,s] [--steps 10] [--runs trl,grpo-1x1,poro-grpo-1x1,grpo-1x1a,...]

Every step samples 8 prompts x G=4 completions of at most 128 tokens (PoRo adds G policy-aware ones per
prompt) and makes one optimizer step over all of them. The model is a fresh random-init tiny model, so
nearly every completion runs to the cap and both sides generate the same number of tokens; the reward
is the pipeline's own scorer with a format pattern that random text matches now and then, so
advantages are non-zero and every step really updates.

- TRL: `GRPOTrainer` in this process (2 threads), generation with transformers' `generate` (its
  vLLM path needs CUDA), reference model for the KL.
- mpi-ray: the real RL stage (`run_rl_stage`: Ray Data prompts, vLLM engine actors, Ray Train DDP
  learners, rewards in Ray tasks, verified weight sync) with E engines x L learners on a local Ray;
  on-policy (rollout.max_staleness 0, as TRL), or with a trailing `a` one step asynchronous (1: the
  engines sample step s+1 while the learners train step s). Each learner takes its whole share of
  the update batch in one forward/backward, as TRL takes its batch.

Printed per run: steady seconds a step (wall time between step reports, the first step excluded),
rollout tokens/s at that pace, and the whole stage's wall time including every start-up; then the
ratios the performance issue asks for. Both sides share the machine's 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mpi_ray.cluster  # noqa: F401  (loopback Ray)
import ray
import torch
from mpi_ray.config import load_config
from mpi_ray.config.schema import RewardConfig
from mpi_ray.data.clevr_policy.__main__ import main as generate_clevr
from mpi_ray.data.prompts import user_turn
from mpi_ray.data.shards import read_split
from mpi_ray.model.tiny import build_tiny
from mpi_ray.rewards.combine import score_response
from mpi_ray.train.rl_trainer import rl_prompt_ids, run_rl_stage
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PROMPTS, GROUP, RESPONSE, LR, KL, TEMPERATURE = 8, 4, 128, 5.0e-6, 0.05, 0.7
REWARD = RewardConfig(accuracy_weight=0.0, format_weight=1.0, format_pattern=".*the.*")


@dataclass
class Measured:
    step_s: float        # steady wall seconds per step
    tokens_per_step: float
    stage_s: float       # the whole stage, start-ups included

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s


def steady(times: list[float], tokens: list[float], stage_s: float) -> Measured:
    """Steady pace from step-end timestamps: the first step (with the start-ups behind it) excluded."""
    step_s = (times[-1] - times[0]) / max(len(times) - 1, 1)
    return Measured(step_s, sum(tokens) / len(tokens), stage_s)


def build_data(work: Path) -> Path:
    data = work / "data"
    generate_clevr(["--depth", "2", "--variant", "T", "--out", str(data), "--policies", "1", "--train-per-policy", "160",
                    "--test", "2", "--general", "0", "--cot-fraction", "0.2", "--image-size", "112", "--seed", "0"])
    return data


# --- TRL -------------------------------------------------------------------------------------------

def trl_dataset(data: Path) -> Any:
    """The RL rows as TRL wants them: conversational prompts with image placeholders, images beside."""
    from datasets import Dataset

    wanted = set(rl_prompt_ids(str(data), "non_cot"))
    rows = []
    for sample in read_split(data, "train"):
        if sample["sample_id"] not in wanted:
            continue
        message, images = user_turn(sample, with_policy=False)
        rows.append({"prompt": [message], "images": [Image.open(io.BytesIO(b)).convert("RGB") for b in images],
                     "answer": sample["answer"], "dataset": sample["dataset"]})
    return Dataset.from_list(rows)


def trl_reward(prompts: list, completions: list, answer: list[str], dataset: list[str], **_: Any) -> list[float]:
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [score_response(d, t, a, "{}", REWARD)["reward"] for t, a, d in zip(texts, answer, dataset, strict=True)]


def run_trl(model_dir: Path, data: Path, steps: int, work: Path) -> Measured:
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback's signature
            self.times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and "completions/mean_length" in logs:
                self.tokens.append(logs["completions/mean_length"] * PROMPTS * GROUP)

    torch.set_num_threads(2)
    started = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir, padding_side="left")
    config = GRPOConfig(
        output_dir=str(work / "trl"), max_steps=steps, learning_rate=LR, lr_scheduler_type="constant",
        warmup_steps=0, beta=KL, num_generations=GROUP, per_device_train_batch_size=PROMPTS * GROUP,
        gradient_accumulation_steps=1, max_completion_length=RESPONSE, temperature=TEMPERATURE,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, bf16=False,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    clock = StepClock()
    trainer = GRPOTrainer(model=model, reward_funcs=trl_reward, args=config, train_dataset=trl_dataset(data),
                          processing_class=processor, callbacks=[clock])
    trainer.train()
    return steady(clock.times, clock.tokens, time.perf_counter() - started)


# --- mpi-ray ---------------------------------------------------------------------------------------

def mpi_overrides(algorithm: str, engines: int, learners: int, staleness: int, steps: int) -> list[str]:
    sequences = PROMPTS * GROUP * (2 if algorithm.startswith("poro") else 1)  # one optimizer step per RL step
    return [f"rl.algorithm={algorithm}", f"rl.max_steps={steps}", f"rl.rollout_batch={PROMPTS}", f"rl.group_size={GROUP}",
            f"rl.update_batch={sequences}", f"rl.micro_batch_per_worker={sequences // learners}", f"rl.kl_coef={KL}",
            f"rl.optim.lr={LR}", "rl.reward.accuracy_weight=0", "rl.reward.format_weight=1",
            f"rl.reward.format_pattern={REWARD.format_pattern}", f"rollout.engines={engines}",
            f"rollout.temperature={TEMPERATURE}", f"rollout.max_response_len={RESPONSE}", f"rollout.max_staleness={staleness}",
            f"resources.learner_workers={learners}", f"rl.workers={learners}"]


def run_mpi(name: str, model_dir: Path, data: Path, steps: int, work: Path) -> Measured:
    algorithm, shape = name.rsplit("-", 1)
    staleness = 1 if shape.endswith("a") else 0
    engines, learners = (int(n) for n in shape.rstrip("a").split("x"))
    cfg = load_config(REPO / "configs/default.yaml", mpi_overrides(algorithm, engines, learners, staleness, steps))
    out = work / name / "rl"
    started = time.perf_counter()
    run_rl_stage(cfg, str(model_dir), str(data), out)
    stage_s = time.perf_counter() - started
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return steady([r["time"] for r in rows], [r["rollout_tokens"] for r in rows], stage_s)


# --- report ----------------------------------------------------------------------------------------

def report(size: str, steps: int, results: dict[str, Measured | str]) -> None:
    print(f"\ntiny-{size}: {PROMPTS} prompts x G={GROUP} (PoRo: +G policy-aware), responses <= {RESPONSE} tokens, "
          f"{steps} steps, one optimizer step each, 2 CPU cores in all")
    print(f"  {'run':<16} {'s/step':>8} {'tokens/step':>12} {'tokens/s':>9} {'stage s':>8} {'not steps':>10}")
    for name, measured in results.items():
        if isinstance(measured, str):
            print(f"  {name:<16} failed: {measured}")
            continue
        # "not steps": the stage's wall time less steps x the steady step: start-ups, first-step warm-up, teardown
        print(f"  {name:<16} {measured.step_s:8.2f} {measured.tokens_per_step:12.0f} "
              f"{measured.tokens_per_s:9.0f} {measured.stage_s:8.1f} {measured.stage_s - steps * measured.step_s:10.1f}")
    trl = results.get("trl")
    for name, measured in results.items():
        if name == "trl" or isinstance(measured, str):
            continue
        line = f"  {name:<16}"
        if isinstance(trl, Measured):
            line += (f" step / TRL {measured.step_s / trl.step_s:5.2f} (goal <= 0.5 for GRPO),"
                     f" stage / TRL {measured.stage_s / trl.stage_s:5.2f} (goal <= 2),"
                     f" tokens/s / TRL {measured.tokens_per_s / trl.tokens_per_s:5.2f}")
        plain = results.get(name.replace("poro-", ""))
        if name.startswith("poro") and isinstance(plain, Measured):
            line += f"; PoRo / GRPO step {measured.step_s / plain.step_s:5.2f} (goal <= 1.3)"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="xs,s")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", default="trl,grpo-1x1,poro-grpo-1x1,grpo-1x1a,poro-grpo-1x1a,grpo-2x2,poro-grpo-2x2",
                        help="trl, or ALGORITHM-ExL[a]: E vLLM engines, L learners, a: one step asynchronous")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_vs_trl_"))
    data = build_data(work)
    runs = args.runs.split(",")
    for size in args.sizes.split(","):
        model_dir = build_tiny(work / f"model-{size}", size)
        results: dict[str, Measured | str] = {}
        if "trl" in runs:  # first, before Ray's workers exist
            try:
                results["trl"] = run_trl(model_dir, data, args.steps, work / size)
            except Exception as error:  # noqa: BLE001 - the table says why a run could not be measured
                results["trl"] = f"{type(error).__name__}: {error}"
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
        try:
            for name in (r for r in runs if r != "trl"):
                results[name] = run_mpi(name, model_dir, data, args.steps, work / size)
        finally:
            ray.shutdown()
        report(size, args.steps, results)


if __name__ == "__main__":
    main()
