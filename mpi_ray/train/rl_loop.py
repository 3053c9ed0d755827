"""The RL learner loop each Ray Train worker runs (GRPO, DAPO, PoRo-GRPO, PoRo-DAPO).

Per step: take the step's rollouts from the buffer (every rank the same), pair every response with
the POLICY-FREE prompt of its prompt (`build_learner_batch`; PoRo, paper Eq. 3), keep this rank's
share, compute old and reference log-probs of the responses on that prompt, run `ppo_epochs` passes
of clipped-ratio updates (one optimizer step per `update_batch` sequences across the workers), then
rank 0 publishes the new weights (version = step + 1) for the rollout pool. Same strategies (DDP,
DeepSpeed ZeRO), same checkpoints and HF export as the CPT/SFT loop.

Every `rl.checkpoint_every` steps the learners checkpoint (weights, optimizer, RNG, the step and the
prompts drawn so far). A re-run of the stage restores the newest one, publishes its weights as that
step's version and tells the buffer to begin there, so the producer skips the prompts already used.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
import torch.distributed as dist

from mpi_ray.config.schema import PipelineConfig
from mpi_ray.model.loading import load_model
from mpi_ray.rl.batch import POLICY_AWARE, POLICY_FREE, LearnerSample, build_learner_batch, group_by_prompt
from mpi_ray.rl.objectives import policy_loss
from mpi_ray.rl.sequences import SequenceEncoder, per_token, response_logprobs
from mpi_ray.rollout import weight_sync
from mpi_ray.train import checkpoint
from mpi_ray.train.checkpoint import seed_all
from mpi_ray.train.losses import next_token_mask
from mpi_ray.train.loop import export_hf
from mpi_ray.train.metrics_log import open_metrics_log
from mpi_ray.train.progress import Pace
from mpi_ray.train.schedule import lr_lambda
from mpi_ray.train.strategy import make_strategy

LOSS_METRICS = ("loss", "kl_mean", "clip_fraction", "ratio_mean", "is_weight_mean")


@dataclass
class RLJob:
    model_path: str  # the start-of-RL model: the policy's init and the frozen reference
    out_dir: str
    cfg: dict[str, Any]  # the PipelineConfig, as JSON
    total_steps: int
    buffer: Any  # the RolloutBuffer actor
    threads: int = 1

    def to_config(self) -> dict[str, Any]:
        return asdict(self)


def _all_reduce_sum(values: list[float]) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def _normalizers(micro_masks: list[torch.Tensor], grad_accum: int, world: int, per_token_mean: bool) -> list[float]:
    """Per update batch, the denominator that makes the micro-batch losses of every rank add up to the
    batch loss after DDP/DeepSpeed average gradients over ranks and accumulation (see aggregate_loss)."""
    counts = [float(m.sum() if per_token_mean else (m.sum(dim=1) > 0).sum()) for m in micro_masks]
    per_update = [sum(counts[i: i + grad_accum]) for i in range(0, len(counts), grad_accum)]
    return [total / (world * grad_accum) for total in _all_reduce_sum(per_update)]


def _probe(row: dict[str, Any]) -> str:
    diff = row.get("weight_sync_probe_diff")
    return "" if diff is None else f" (probe diff {diff:.1e})"


def _progress(step: int, total: int, row: dict[str, Any], eta: float | None) -> str:
    def group(key: str) -> str:
        parts = [f"{short} {row[f'{g}/{key}']:.2f}" for g, short in ((POLICY_FREE, "free"), (POLICY_AWARE, "aware"))
                 if f"{g}/{key}" in row]
        return " / ".join(parts)

    return (f"[rl] step {step}/{total} reward {group('reward')} acc {group('accuracy')} kl {row['kl_mean']:.4f} "
            f"clip {row['clip_fraction']:.3f} stale {row['staleness']} kept {row['groups_kept']} "
            f"gen {row['rollout_tokens_per_s']:.0f} tok/s learn {row['learner_tokens_per_s']:.0f} tok/s "
            f"sync {row['weight_sync_s']:.2f}s{_probe(row)} step {row['step_s']:.1f}s {Pace.describe(None, eta)}")


def rl_learner_loop(config: dict[str, Any]) -> None:
    job = RLJob(**config)
    cfg = PipelineConfig.model_validate(job.cfg)
    rl = cfg.rl
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(job.threads)
    seed_all(cfg.run.seed + rank)

    model = load_model(job.model_path, cfg.model.dtype).train()
    if cfg.learner.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    reference = load_model(job.model_path, cfg.model.dtype).eval().requires_grad_(False) if rl.kl_coef > 0 else None
    per_worker = rl.update_batch // world
    grad_accum = per_worker // rl.micro_batch_per_worker
    sequences = rl.rollout_batch * rl.group_size * (2 if rl.uses_poro else 1)
    optimizer_steps = job.total_steps * (sequences // rl.update_batch) * rl.ppo_epochs
    factor = lr_lambda(optimizer_steps, rl.optim.warmup_ratio, rl.optim.schedule)
    strategy = make_strategy(model, cfg.learner, rl.optim, factor, grad_accum, rl.micro_batch_per_worker)
    encoder = SequenceEncoder(job.model_path, cfg.model.min_pixels, cfg.model.max_pixels)

    storage = checkpoint.storage_dir(job.out_dir, "rl")
    position = checkpoint.restore(strategy, rank, world, storage)
    first_step, prompts_drawn = (position["step"], position["prompts_drawn"]) if position else (0, 0)
    publisher = weight_sync.WeightPublisher(cfg.rollout, strategy, job.buffer, encoder, rank)
    if position:
        publisher.publish(first_step)  # the engines start from the checkpoint
    resumed_at = first_step if position else None
    metrics_log = open_metrics_log(Path(job.out_dir) / "metrics.jsonl", "step", resumed_at) if rank == 0 else None
    # The prompts each step drew, in order; a resumed run keeps the rows up to its checkpoint, as metrics do.
    order_log = open_metrics_log(Path(job.out_dir) / "data_order.jsonl", "step", resumed_at) if rank == 0 else None
    if rank == 0:
        if position:
            print(f"[rl] resumed at step {first_step} of {job.total_steps} ({prompts_drawn} prompts drawn)", flush=True)
        ray.get(job.buffer.begin.remote(first_step, prompts_drawn))
    pace = Pace(job.total_steps)
    for step in range(first_step, job.total_steps):
        waited = time.perf_counter()
        entry = ray.get(job.buffer.take.remote(step))
        waited = time.perf_counter() - waited
        if entry.end is not None:
            if rank == 0:
                print(f"[rl] stopping before step {step + 1}: {entry.end}", flush=True)
            break
        step_start = time.perf_counter()
        staleness = step - entry.weight_version  # the learner holds version `step`
        if not 0 <= staleness <= cfg.rollout.max_staleness:
            raise RuntimeError(f"step {step}: rollouts of weights v{entry.weight_version} are {staleness} versions "
                               f"old; rollout.max_staleness={cfg.rollout.max_staleness}")
        rollouts = [r for kind in (POLICY_FREE, POLICY_AWARE) if kind in entry.groups for r in ray.get(entry.groups[kind])]
        samples = build_learner_batch(group_by_prompt(rollouts), ray.get(entry.prompts), rl.uses_poro)
        learner = _update(strategy, reference, encoder, samples[rank::world], staleness > 0, cfg, grad_accum, world)
        publish_s = publisher.publish(step + 1)
        step_s = time.perf_counter() - step_start
        tokens = _all_reduce_sum([learner.pop("tokens")])[0]
        drawn_ids = entry.stats.pop("drawn_ids")
        prompts_drawn += entry.stats["prompts_drawn"]
        # Logged before the checkpoint: a driver killed between the two must not leave this step out of the
        # logs that a resume from that checkpoint keeps.
        if metrics_log is not None:
            order_log.write(json.dumps({"step": step + 1, "ids": drawn_ids}) + "\n")
            order_log.flush()
            row = {"step": step + 1, "time": time.time(), **entry.stats, **learner, "staleness": staleness,
                   "lr": strategy.lr, "learner_tokens_per_s": tokens / max(step_s, 1e-9), "publish_s": publish_s,
                   "step_s": step_s, "wait_for_rollouts_s": waited}
            metrics_log.write(json.dumps(row) + "\n")
            metrics_log.flush()
            due = pace.due(step + 1)
            _, eta = pace.update(step + 1)
            if due:
                print(_progress(step + 1, job.total_steps, row, eta), flush=True)
        if (step + 1) % rl.checkpoint_every == 0 and step + 1 < job.total_steps:
            checkpoint.save(strategy, rank, step + 1, {"step": step + 1, "prompts_drawn": prompts_drawn}, {"step": step + 1},
                            storage)
    if metrics_log:
        metrics_log.close()
        order_log.close()
    export_hf(job.out_dir, job.model_path, strategy, rank)


def _update(strategy: Any, reference: torch.nn.Module | None, encoder: SequenceEncoder, samples: list[LearnerSample],
            off_policy: bool, cfg: PipelineConfig, grad_accum: int, world: int) -> dict[str, Any]:
    """ppo_epochs passes over this rank's samples; returns averaged loss metrics and the tokens seen."""
    rl = cfg.rl
    size = rl.micro_batch_per_worker
    micro = [samples[i: i + size] for i in range(0, len(samples), size)]
    batches = [encoder.batch(chunk) for chunk in micro]
    encoder.forget_prompts()
    masks = [next_token_mask(batch["labels"]) for batch in batches]
    temperature = cfg.rollout.temperature
    # The "old" log-probs are the weights' before this update. When no optimizer step falls before the
    # last micro-batch's forward, every loss forward runs on those weights: its detached log-probs are
    # the old ones, and a separate pass (a fifth of the learner's work) would only recompute them.
    reuse_old = rl.ppo_epochs == 1 and len(batches) <= strategy.steps_to_update
    old: list[torch.Tensor | None] = [None] * len(batches)
    ref: list[torch.Tensor | None] = [None] * len(batches)
    with torch.no_grad():
        for index, batch in enumerate(batches):
            if not reuse_old:
                old[index] = response_logprobs(strategy.forward_module, batch, temperature)[0]
            if reference is not None:
                ref[index] = response_logprobs(reference, batch, temperature)[0]
    normalizers = _normalizers(masks, grad_accum, world, rl.loss_agg == "token-mean")
    sums = dict.fromkeys(LOSS_METRICS, 0.0)
    grad_norms = []
    for _ in range(rl.ppo_epochs):
        for index, (chunk, batch) in enumerate(zip(micro, batches)):
            behavior, has_behavior = per_token([s.behavior_logp for s in chunk], masks[index]) if off_policy else (None, None)
            advantages = torch.tensor([s.advantage for s in chunk], dtype=torch.float32)
            results: dict[str, float] = {}

            def compute_loss(module: torch.nn.Module) -> torch.Tensor:
                logp, mask = response_logprobs(module, batch, temperature)
                loss, metrics = policy_loss(
                    logp, logp.detach() if reuse_old else old[index], advantages, mask, rl.clip_low, rl.clip_high, rl.loss_agg,
                    ref_logp=ref[index], kl_coef=rl.kl_coef, kl_estimator=rl.kl_estimator,
                    behavior_logp=behavior, is_cap=cfg.rollout.is_truncation, behavior_mask=has_behavior,
                    normalizer=normalizers[index // grad_accum])
                results.update(metrics)
                return loss

            _, grad_norm = strategy.train_step(compute_loss)
            if grad_norm is not None:
                grad_norms.append(grad_norm)
            for key in LOSS_METRICS:
                sums[key] += results[key]
    passes = len(micro) * rl.ppo_epochs
    averaged = [value / passes / world for value in _all_reduce_sum(list(sums.values()))]
    tokens = float(sum(int(b["attention_mask"].sum()) for b in batches))
    return {**dict(zip(LOSS_METRICS, averaged)), "grad_norm": max(grad_norms, default=None), "tokens": tokens}
