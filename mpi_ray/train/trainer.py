"""Driver side of a learner stage: plan the data, start Ray Train's TorchTrainer, return the HF export."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, Result, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mpi_ray.cluster import on_driver_node
from mpi_ray.config.schema import PipelineConfig, StageConfig
from mpi_ray.data.streams import SampleErrors, StreamSpec, deterministic_context, split_rows, stage_dataset
from mpi_ray.train import checkpoint
from mpi_ray.train.loop import LearnerJob, learner_loop
from mpi_ray.train.plan import eligible_ids, make_plan, stream_chunks


def scaling(cfg: PipelineConfig, workers: int) -> ScalingConfig:
    res = cfg.resources
    per_worker = {"CPU": res.cpus_per_learner, **res.learner_resources}
    if res.use_gpu:
        per_worker["GPU"] = res.gpus_per_learner
    return ScalingConfig(num_workers=workers, use_gpu=res.use_gpu, resources_per_worker=per_worker)


def fit(trainer: TorchTrainer) -> Result:
    """trainer.fit(), then the driver's SIGINT handler put back. Ray Train's handler holds the finished
    run's controller actor, so the controller (with its placement-group cleaner and dataset manager, all
    polling) outlived its stage until the next fit or the driver's exit: on 2 cores the leftovers took CPU
    from eval and from the rest of a test session."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        return trainer.fit()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def learner_stream_spec(cfg: PipelineConfig, stage: str, model_path: str) -> StreamSpec:
    """What a learner stage's Ray Data tasks encode its rows with."""
    stage_cfg: StageConfig = getattr(cfg, stage)
    return StreamSpec(stage="cpt" if stage == "cpt" else "sft", model_path=model_path,
                      target=getattr(stage_cfg, "target", "cot"), min_pixels=cfg.model.min_pixels,
                      max_pixels=cfg.model.max_pixels, max_seq_len=stage_cfg.max_seq_len,
                      on_bad_sample=cfg.data.on_bad_sample)


def run_learner_stage(cfg: PipelineConfig, stage: str, model_path: str, data_dir: str, out_dir: Path,
                      max_failures: int = 2, fail_at_micro_step: int | None = None) -> dict[str, Any]:
    """Train `stage` ("cpt" or "sft") from `model_path` on `data_dir`; the export lands in out_dir/hf."""
    stage_cfg: StageConfig = getattr(cfg, stage)
    if fail_at_micro_step is None and stage == "cpt":
        fail_at_micro_step = cfg.drill.kill_cpt_learner_after_step
    target = getattr(stage_cfg, "target", "cot")
    workers = stage_cfg.workers or cfg.resources.learner_workers
    needs_cot = stage == "cpt" or target == "cot"
    ids = eligible_ids(data_dir, "train", needs_cot, policy_rows_only=stage == "cpt")
    max_micro = stage_cfg.max_steps * stage_cfg.grad_accum if stage_cfg.max_steps else None
    plan = make_plan(ids, workers, stage_cfg.batch_size_per_worker, stage_cfg.epochs, cfg.run.seed, max_micro)

    deterministic_context()
    errors = SampleErrors.options(**on_driver_node()).remote()
    spec, rows = learner_stream_spec(cfg, stage, model_path), split_rows(data_dir, "train")
    datasets, names = {}, []  # names[epoch][rank]: that rank's streams of the epoch, read one after another
    for epoch, ranks in enumerate(plan.assignments):
        names.append([])
        for rank, rank_ids in enumerate(ranks):
            chunks = stream_chunks(rank_ids, cfg.data.stream_chunk_rows, stage_cfg.batch_size_per_worker)
            names[-1].append([f"e{epoch}_r{rank}_c{chunk}" for chunk in range(len(chunks))])
            for name, chunk_ids in zip(names[-1][-1], chunks):
                datasets[name] = stage_dataset(data_dir, "train", spec, errors, sample_ids=chunk_ids, rows=rows)

    out_dir.mkdir(parents=True, exist_ok=True)
    job = LearnerJob(
        stage=stage, model_path=model_path, out_dir=str(out_dir), stage_cfg=stage_cfg.model_dump(mode="json"),
        learner_cfg=cfg.learner.model_dump(mode="json"), model_cfg=cfg.model.model_dump(mode="json"),
        micro_steps_per_epoch=plan.micro_steps_per_epoch, total_micro_steps=plan.total_micro_steps,
        epochs=plan.epochs, seed=cfg.run.seed, threads=max(1, int(cfg.resources.cpus_per_learner)),
        fail_at_micro_step=fail_at_micro_step, dataset_names=names,
    )
    print(f"[{stage}] {len(ids)} rows, {workers} workers x batch {stage_cfg.batch_size_per_worker}: "
          f"{plan.micro_steps_per_epoch} micro-steps an epoch, {plan.total_micro_steps} in all ({cfg.learner.strategy})")
    trainer = TorchTrainer(
        learner_loop,
        train_loop_config=job.to_config(),
        scaling_config=scaling(cfg, workers),
        run_config=RunConfig(
            name=stage,
            storage_path=str(checkpoint.storage_dir(out_dir, stage).parent),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=[]),
    )
    result = fit(trainer)
    skipped = ray.get(errors.report.remote())
    return {"model": str(out_dir / "hf"), "micro_steps": plan.total_micro_steps, "skipped_samples": len(skipped),
            "final_loss": (result.metrics or {}).get("loss")}
