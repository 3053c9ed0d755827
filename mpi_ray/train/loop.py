"""The learner loop each Ray Train worker runs for CPT and SFT (TorchTrainer, Train V2).

Data: the driver assigns every rank an equal, seeded list of rows per epoch (`plan.py`), delivered
as its own Ray Data streams of at most `data.stream_chunk_rows` rows; rows keep shard order, so a
rank's epoch is the same on every run and a resumed run skips exactly the micro-batches it had
consumed. Checkpoints hold weights, optimizer,
scheduler, the micro-step, and each rank's RNG state.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import ray.train
import torch
import torch.distributed as dist

from mpi_ray.config.schema import LearnerConfig, ModelConfig, SftConfig, StageConfig
from mpi_ray.data.streams import padded_batch
from mpi_ray.model.loading import load_model, load_processor, visual_tokens
from mpi_ray.train import checkpoint
from mpi_ray.train.checkpoint import seed_all
from mpi_ray.train.lora import apply_lora, merged
from mpi_ray.train.losses import masked_lm_loss
from mpi_ray.train.metrics_log import open_metrics_log
from mpi_ray.train.progress import Pace
from mpi_ray.train.schedule import lr_lambda
from mpi_ray.train.strategy import make_strategy


@dataclass
class LearnerJob:
    """Everything a worker needs, as plain data (it crosses to the workers)."""

    stage: str
    model_path: str
    out_dir: str
    stage_cfg: dict[str, Any]
    learner_cfg: dict[str, Any]
    model_cfg: dict[str, Any]
    micro_steps_per_epoch: int
    total_micro_steps: int
    epochs: int
    seed: int
    threads: int = 1
    fail_at_micro_step: int | None = None  # tests: the last rank dies once, in the micro-step after this one
    dataset_names: list[list[list[str]]] = field(default_factory=list)  # [epoch][rank] -> its streams, in order

    def to_config(self) -> dict[str, Any]:
        return asdict(self)


def _all_have_batch(has_batch: bool) -> bool:
    """Every rank must step together: stop the epoch when any rank's stream ran dry."""
    if not (dist.is_available() and dist.is_initialized()):
        return has_batch
    flag = torch.tensor([1 if has_batch else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The forward's inputs; labels stay out so the loss is ours (Eq. 2), not the model's."""
    return {k: v for k, v in batch.items() if k != "labels"}


def learner_loop(config: dict[str, Any]) -> None:
    job = LearnerJob(**config)
    stage_cfg = (SftConfig if job.stage == "sft" else StageConfig).model_validate(job.stage_cfg)
    learner_cfg = LearnerConfig.model_validate(job.learner_cfg)
    model_cfg = ModelConfig.model_validate(job.model_cfg)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(job.threads)
    seed_all(job.seed + rank)

    model = load_model(job.model_path, model_cfg.dtype).train()
    if learner_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if stage_cfg.lora.enabled:
        model = apply_lora(model, stage_cfg.lora)
    optimizer_steps = max(1, job.total_micro_steps // stage_cfg.grad_accum)
    factor = lr_lambda(optimizer_steps, stage_cfg.optim.warmup_ratio, stage_cfg.optim.schedule)
    strategy = make_strategy(model, learner_cfg, stage_cfg.optim, factor, stage_cfg.grad_accum, stage_cfg.batch_size_per_worker)
    pad_id = load_processor(job.model_path).tokenizer.pad_token_id
    image_token_id = visual_tokens(job.model_path).image

    position = checkpoint.restore(strategy, rank, world, checkpoint.storage_dir(job.out_dir, job.stage))
    micro_step = position["micro_step"] if position else 0
    if position:
        print(f"[{job.stage}] rank {rank} resumed at micro-step {micro_step}", flush=True)

    out = Path(job.out_dir)
    mode = "a" if position else "w"  # a restart appends to its own run's log; a fresh run starts it anew
    order_log = (out / f"data_order_rank{rank}.jsonl").open(mode)
    metrics_log = open_metrics_log(out / "metrics.jsonl", "micro_step", micro_step if position else None) if rank == 0 else None
    pace, tokens = Pace(job.total_micro_steps), 0
    step_s = 0.0  # compute of the micro-steps since the last report (the run's time split counts it as work)
    checkpoint_every = stage_cfg.checkpoint_every * stage_cfg.grad_accum
    for epoch in range(job.epochs):
        epoch_start = epoch * job.micro_steps_per_epoch
        if micro_step >= min(epoch_start + job.micro_steps_per_epoch, job.total_micro_steps):
            continue
        skip = micro_step - epoch_start
        iterator = _epoch_batches(job.dataset_names[epoch][rank], stage_cfg, job.seed, epoch, rank)
        for index in range(job.micro_steps_per_epoch):
            if micro_step >= job.total_micro_steps:
                break
            rows = next(iterator, None)
            if not _all_have_batch(rows is not None):
                print(f"[{job.stage}] epoch {epoch}: a rank's stream ended early (skipped bad samples); next epoch", flush=True)
                break
            if index < skip:
                continue  # consumed before the restart; its update is in the checkpoint
            started = time.perf_counter()
            batch = padded_batch(rows, pad_id, image_token_id)
            labels = batch["labels"]
            loss, grad_norm = strategy.train_step(lambda m: masked_lm_loss(m(**_model_inputs(batch)).logits, labels)[0])
            step_s += time.perf_counter() - started
            micro_step += 1
            tokens += int(batch["attention_mask"].sum())
            if job.fail_at_micro_step and micro_step == job.fail_at_micro_step + 1 and rank == world - 1:
                _die_once(out, rank, micro_step)
            order_log.write(json.dumps({"micro_step": micro_step, "epoch": epoch, "ids": [str(i) for i in rows["sample_id"]]}) + "\n")
            order_log.flush()
            if grad_norm is None and micro_step < job.total_micro_steps:
                continue
            _report(job, strategy, rank, micro_step, epoch, loss, grad_norm, tokens, step_s, pace, checkpoint_every, metrics_log)
            step_s = 0.0
    order_log.close()
    export_hf(job.out_dir, job.model_path, strategy, rank)


def _epoch_batches(names: list[str], stage_cfg: StageConfig, seed: int, epoch: int, rank: int) -> Iterator[dict[str, Any]]:
    """A rank's epoch: its streams one after another, each drawn through its own seeded shuffle buffer
    (the same seeds give the same order on a restart; the loop skips the steps already done).

    Each stream is read to the end by a helper thread into a queue, the next one as soon as the one
    before is read (two streams' batches in memory at most): Ray Data's executor lives in this process
    until its stream is consumed, and once its tasks are done it polls without waiting, taking the GIL
    from the training thread (plan.stream_chunks has the measurement). Drained at encoding speed, a
    stream's executor ends within a second or two. Training takes each batch as soon as it is queued,
    and when it stops early the stream being read is abandoned at its next batch instead of read to
    its end (a 4-step VM-CPT: 80.1 -> 61.4 s; the first batch still waits for the first encoded blocks
    to fill the shuffle buffer, about 25 s of a cold stage's start-up)."""
    stop = threading.Event()

    def drain(chunk: int, shard: Any, out: queue.Queue) -> None:
        try:
            for batch in shard.iter_batches(
                    batch_size=stage_cfg.batch_size_per_worker, batch_format="numpy", drop_last=True,
                    local_shuffle_buffer_size=stage_cfg.shuffle_buffer or None,
                    local_shuffle_seed=seed * 10_000_000 + epoch * 100_000 + rank * 1_000 + chunk):
                if stop.is_set():
                    break
                out.put(batch)
            out.put(_END)
        except BaseException as error:  # noqa: BLE001 - raised again in the training thread
            out.put(error)

    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="next-stream")
    queues = [queue.Queue() for _ in names]
    try:
        if names:
            reader.submit(drain, 0, ray.train.get_dataset_shard(names[0]), queues[0])
        for chunk in range(len(names)):
            if chunk + 1 < len(names):  # runs once this one is read: two in memory at most
                reader.submit(drain, chunk + 1, ray.train.get_dataset_shard(names[chunk + 1]), queues[chunk + 1])
            while (batch := queues[chunk].get()) is not _END:
                if isinstance(batch, BaseException):
                    raise batch
                yield batch
    finally:
        stop.set()
        reader.shutdown(wait=False, cancel_futures=True)


_END = object()  # a stream's last batch was queued


def _die_once(out: Path, rank: int, micro_step: int) -> None:
    """The worker-failure drill: this rank's process dies mid-step, once per run directory."""
    marker = out / "simulated_worker_death"
    if marker.exists():
        return
    marker.write_text(f"rank {rank} died in micro-step {micro_step}\n")
    time.sleep(3)  # a crash a few seconds after the checkpoint, once Ray Train's controller has registered it
    print(f"rank {rank}: simulated worker death in micro-step {micro_step}", flush=True)
    os._exit(1)


def _report(job: LearnerJob, strategy: Any, rank: int, micro_step: int, epoch: int, loss: float,
            grad_norm: float | None, tokens: int, step_s: float, pace: Pace, checkpoint_every: int,
            metrics_log: Any) -> None:
    due = pace.due(micro_step)
    rate, eta = pace.update(micro_step, tokens)
    metrics = {"stage": job.stage, "micro_step": micro_step, "epoch": epoch, "loss": loss, "lr": strategy.lr,
               "grad_norm": grad_norm, "tokens": tokens, "time": time.time(), "step_s": step_s, "tokens_per_s": rate,
               "eta_s": eta}
    is_last = micro_step >= job.total_micro_steps
    if metrics_log:
        metrics_log.write(json.dumps(metrics) + "\n")
        metrics_log.flush()
    if metrics_log and due:
        print(f"[{job.stage}] step {micro_step}/{job.total_micro_steps} loss {loss:.4f} lr {strategy.lr:.2e} "
              f"{Pace.describe(rate, eta)}", flush=True)
    if micro_step % checkpoint_every and not is_last:
        # Metrics go to the JSONL file; Ray Train gets a report only with a checkpoint, because its
        # controller takes one report per worker per poll and a lagging queue loses checkpoints on a crash.
        return
    checkpoint.save(strategy, rank, micro_step, {"micro_step": micro_step, "epoch": epoch}, metrics,
                    checkpoint.storage_dir(job.out_dir, job.stage))


def export_hf(out_dir: str, processor_from: str, strategy: Any, rank: int) -> None:
    """The stage's result as a Hugging Face folder (LoRA merged) that the next stage, vLLM and Serve load."""
    hf_dir = Path(out_dir) / "hf"
    with strategy.gathered() as module:
        if rank == 0:
            model = merged(module)
            model.save_pretrained(hf_dir)
            load_processor(processor_from).save_pretrained(hf_dir)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
