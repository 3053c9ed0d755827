"""Driver side of the RL stage: the prompt stream, the buffer, the rollout producer, the learners.

    Ray Data (RL prompt rows) --> RolloutProducer (pool of vLLM actors, rewards in Ray tasks)
        --> object store --> RolloutBuffer (refs, weight version, group type)
        --> Ray Train learners (rl_loop) --> new weights --> buffer --> producer --> engines
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.train.torch import TorchTrainer

from mpi_ray.cluster import on_driver_node
from mpi_ray.config.schema import PipelineConfig
from mpi_ray.data.shards import read_shard, shard_paths
from mpi_ray.data.streams import SampleErrors, StreamSpec, deterministic_context, stage_dataset
from mpi_ray.rollout.buffer import RolloutBuffer
from mpi_ray.rollout.prestart import StartedEngines
from mpi_ray.rollout.producer import RolloutJob, RolloutProducer
from mpi_ray.train import checkpoint
from mpi_ray.train.plan import eligible_ids
from mpi_ray.train.rl_loop import RLJob, rl_learner_loop
from mpi_ray.train.trainer import fit, scaling


def rl_prompt_ids(data_dir: str, rows: str) -> list[str]:
    """The train rows RL samples from: those without a CoT (the paper's non-CoT RL data), or all."""
    every = eligible_ids(data_dir, "train", needs_cot=False, policy_rows_only=True)
    if rows == "all":
        return every
    with_cot = set(eligible_ids(data_dir, "train", needs_cot=True))
    return [sample_id for sample_id in every if sample_id not in with_cot]


def drawn_prompt_ids(ids: list[str], drawn: int, dynamic_sampling: bool, seed: int) -> list[str]:
    """The prompts the producer's stream carries: where rl.max_steps stops RL inside its first pass and
    every step draws rl.rollout_batch prompts (no dynamic sampling), a seeded subset of that many, in shard
    order, so the stream encodes what the steps draw and not the whole split (the default's 8 steps draw
    64 of 1,024 prompts: the stream encoded all of them, about 10 s of a core during RL's start-up)."""
    if dynamic_sampling or drawn >= len(ids):
        return ids
    kept = set(random.Random(seed).sample(ids, drawn))
    return [sample_id for sample_id in ids if sample_id in kept]


def max_images(data_dir: str) -> int:
    """Images in the largest policy-aware prompt (policy images + query images) of any split: vLLM's
    per-prompt limit, so that the engines, handed on to eval after RL, also take the test suites' prompts."""
    most = 1
    for path in shard_paths(data_dir, "*"):  # "*": the shards of every split
        table = read_shard(path, columns=["policy_images", "images"])
        counts = pc.add(pc.list_value_length(table["policy_images"]), pc.list_value_length(table["images"]))
        most = max(most, int(pc.max(counts).as_py() or 0))
    return most


def total_steps(cfg: PipelineConfig, prompts: int) -> int:
    """Steps of `rl.epochs` passes over the prompts (the last partial batch dropped), capped by rl.max_steps."""
    steps = max(1, math.floor(cfg.rl.epochs * prompts / cfg.rl.rollout_batch))
    return min(steps, cfg.rl.max_steps) if cfg.rl.max_steps else steps


def rl_stream_spec(cfg: PipelineConfig, model_path: str) -> StreamSpec:
    """What the RL producer's Ray Data tasks encode its prompts with."""
    return StreamSpec(stage="rl", model_path=model_path, min_pixels=cfg.model.min_pixels, max_pixels=cfg.model.max_pixels,
                      max_seq_len=cfg.rollout.max_prompt_len, on_bad_sample=cfg.data.on_bad_sample)


def run_rl_stage(cfg: PipelineConfig, model_path: str, data_dir: str, out_dir: Path,
                 started: StartedEngines | None = None) -> dict[str, Any]:
    """RL from `model_path` on the train prompts of `data_dir`; the final policy lands in out_dir/hf.
    `started`: the pool's engines, launched ahead while the stage before trained (rollout.prestart); they
    outlive the stage (the pool kills only engines it started): the caller releases them or hands them on."""
    rl = cfg.rl
    workers = rl.workers or cfg.resources.learner_workers
    ids = rl_prompt_ids(data_dir, rl.prompt_rows)
    if len(ids) < rl.rollout_batch:
        raise ValueError(f"{len(ids)} RL prompts ({rl.prompt_rows} train rows) cannot fill rl.rollout_batch={rl.rollout_batch}")
    steps = total_steps(cfg, len(ids))
    every, ids = len(ids), drawn_prompt_ids(ids, steps * rl.rollout_batch, rl.dynamic_sampling, cfg.run.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    deterministic_context()  # the same prompt order on every run: a resumed stage skips exactly the drawn ones
    errors = SampleErrors.options(**on_driver_node()).remote()
    prompts = stage_dataset(data_dir, "train", rl_stream_spec(cfg, model_path), errors, sample_ids=ids)
    print(f"[rl] {rl.algorithm}: {len(ids)} of {every} prompts, {steps} steps of {rl.rollout_batch} prompts x G={rl.group_size}"
          f"{' x 2 groups (PoRo)' if rl.uses_poro else ''}; {cfg.rollout.engines} vLLM engines, {workers} learners "
          f"({cfg.learner.strategy}), max_staleness {cfg.rollout.max_staleness}", flush=True)

    if started and not started.serves(model_path):
        print(f"[rl] the engines started ahead from {started.model_path} cannot take {model_path} in place "
              f"(another architecture or tokenizer): starting new ones", flush=True)
        started.release()
        started = None
    buffer = RolloutBuffer.options(**on_driver_node()).remote(cfg.rollout.max_staleness, workers)
    config_json = cfg.model_dump(mode="json")
    producer = RolloutProducer.options(**on_driver_node()).remote(
        RolloutJob(model_path, config_json, prompts, steps, max_images(data_dir), started.engines if started else None), buffer)
    produced = producer.run.remote()
    job = RLJob(model_path=model_path, out_dir=str(out_dir), cfg=config_json, total_steps=steps, buffer=buffer,
                threads=max(1, int(cfg.resources.cpus_per_learner)))
    trainer = TorchTrainer(
        rl_learner_loop,
        train_loop_config=job.to_config(),
        scaling_config=scaling(cfg, workers),
        # A learner failure fails the stage (the rollouts in flight were sampled for weights it lost);
        # re-running the stage resumes from the newest checkpoint of this run name.
        run_config=RunConfig(name="rl", storage_path=str(checkpoint.storage_dir(out_dir, "rl").parent),
                             failure_config=FailureConfig(max_failures=0),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    try:
        fit(trainer)
        summary = ray.get(produced)
    finally:
        try:
            ray.get(producer.shutdown.remote(), timeout=60)
        finally:
            ray.kill(producer)
            ray.kill(buffer)
    skipped = ray.get(errors.report.remote())
    return {"model": str(out_dir / "hf"), "rl_steps": summary["steps"], "rl_planned_steps": steps,
            "early_stop": summary["early_stop"], "engine_restarts": summary["engine_restarts"],
            "skipped_samples": len(skipped)}
