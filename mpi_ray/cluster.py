"""Connect to Ray: the cluster of `ray job submit`, or a local one bound to loopback."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

# Ray swaps 127.0.0.1 for the machine's routable address while its multi-node mode is on; a local
# run (no RAY_ADDRESS) turns it off so every Ray server listens on loopback only. Read at import.
if not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from mpi_ray.config.schema import PipelineConfig  # noqa: E402

# Workers of every actor and task see these; vLLM reads its CPU KV-cache size from the environment.
# Ray Train's print patch echoes every print of a learner twice (stdout and its logger); vLLM's INFO
# lines (hundreds per engine start) bury the progress lines unless a user asks for them.
# HF_HUB_DISABLE_PROGRESS_BARS: transformers' weight loading/saving bars, two lines per load in a worker's log.
QUIET_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "RAY_DEDUP_LOGS": "1",
             "RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
# Deprecation warnings that other libraries raise in our workers and no call of ours avoids. Set at
# interpreter start (PYTHONWARNINGS): a filter set later is undone when a `catch_warnings` block in
# another thread (Ray Data's, vLLM's) exits, which is how the eval workers kept printing them.
UNAVOIDABLE_WARNINGS = (
    # vLLM adds min_pixels/max_pixels aliases to the `size` bounds we give it (qwen2_vl.py), and
    # transformers 5 calls those deprecated: once per engine start
    "ignore:Passing `min_pixels` and `max_pixels`:FutureWarning",
    "ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning",  # vLLM's triton dispatcher, at import
    "ignore:`ExecutionOptions.exclude_resources` is deprecated",  # Ray Train's DatasetManager, every stream
)
QUIET_ENV["PYTHONWARNINGS"] = ",".join(UNAVOIDABLE_WARNINGS)
# vLLM's CPU worker binds its memory to a NUMA node with a C++ op that warns at every engine start,
# through torch's C++ log, which only this variable, read at process start, turns down: engines only.
CPU_ENGINE_ENV = {"TORCH_CPP_LOG_LEVEL": "ERROR"}
# Said once by the driver instead of by each engine (rollout.engine.CPU_START_NOTES drops the notes there).
CPU_ENGINE_NOTE = ("[vllm] CPU engines run eager, without Triton, a tcmalloc/iomp preload or NUMA choice: "
                   "expected on CPU, so vLLM's start-up notes about it are not repeated per engine")
# Ray Data says "Progress bars disabled" once in every process that runs a stream; we turn them off
# on purpose when the output is not a terminal (connect), so the note says nothing new.
RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"
# Ray loggers every job's workers turn down to ERROR (the worker_process_setup_hook), on any cluster.
QUIET_LOGGERS = (
    # Ray Train asks the autoscaler for its workers' resources with a 5 s timeout and retries; a miss
    # (no autoscaler on a hand-started or local cluster, or a coordinator slow to start on busy cores)
    # is logged with a 20-line traceback that Ray calls safe to ignore (first learner stage, 2 runs in 3).
    "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client",
    RAY_DATA_PROGRESS_LOGGER,
)
# And on a local cluster only: Ray Train's placement-group cleaner asks the State API, which a local
# cluster without the dashboard lacks, and warns every second; a local cluster dies with the driver,
# so nothing is left to clean. On a real cluster its warnings matter.
QUIET_LOCAL_LOGGERS = (*QUIET_LOGGERS, "ray.train.v2._internal.execution.controller.placement_group_cleaner")


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def quiet_worker(names: tuple[str, ...] = QUIET_LOGGERS) -> None:
    """worker_process_setup_hook of a joined cluster. A filter, not a level: Ray Train's logging config
    (dictConfig) resets the level of every existing logger below `ray.train`, as vLLM's does for its own."""
    for name in names:
        logging.getLogger(name).addFilter(_errors_only)


def quiet_local_worker() -> None:
    """worker_process_setup_hook of the local cluster."""
    quiet_worker(QUIET_LOCAL_LOGGERS)


def engine_actor_options(use_gpu: bool) -> dict[str, Any]:
    """Actor options every vLLM engine actor (rollout pool, eval pool) gets on top of its resources."""
    return {} if use_gpu else {"runtime_env": {"env_vars": CPU_ENGINE_ENV}}  # merged into the job's env_vars


def on_driver_node() -> dict[str, Any]:
    """Actor options for a job's bookkeeping actors (the skipped-sample counter, the rollout buffer and
    producer): on the driver's node, so losing a worker node does not take the job's state with it (the
    fault drills lost a finished RL stage that way); the driver's own node going down ends the job anyway."""
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)}


WORKERS_SOFT_LIMIT_PER_CPU = 3  # idle processes kept warm: a few hundred MB each, bounded by what the run starts
# Ray Train's controller polls its workers every 2 s by default, so each fit ended up to 2 s after its last
# step; measured on a fit whose loop sleeps 1 s (benchmarks/bench_fit_overhead.py): 9.2-10.9 s at 2 s,
# 8.2-8.4 s at 0.5 s, no better at 0.2 s. The controller reads it from the driver's env (Ray Train propagates it).
TRAIN_POLL_INTERVAL_S = "0.5"


def connect(cfg: PipelineConfig) -> str:
    """Start or join Ray; returns a short description of where we are."""
    if ray.is_initialized():
        return "already connected"
    # Ray Data redraws its progress bars many times a second; into a log file (ray job submit, CI) that
    # is thousands of lines. Our own per-step lines carry the progress there.
    ray.data.DataContext.get_current().enable_progress_bars = sys.stdout.isatty()
    logging.getLogger(RAY_DATA_PROGRESS_LOGGER).addFilter(_errors_only)
    address = cfg.run.ray_address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", TRAIN_POLL_INTERVAL_S)
    env_vars = {**QUIET_ENV, "VLLM_CPU_KVCACHE_SPACE": str(cfg.rollout.kv_cache_gib)}
    if not cfg.resources.use_gpu:  # DeepSpeed warns in every learner when it has to guess the CPU
        env_vars["DS_ACCELERATOR"] = "cpu"
    runtime_env = {"env_vars": env_vars}
    if not cfg.resources.use_gpu and {"rl", "eval"} & set(cfg.run.stages):
        print(CPU_ENGINE_NOTE, flush=True)
    if address:
        ray.init(address=address, runtime_env={**runtime_env, "worker_process_setup_hook": f"{__name__}.quiet_worker"},
                 log_to_driver=True)
        return f"joined Ray cluster at {address}"
    # Ray Train's preemption watcher (one actor per learner stage) follows nodes being drained, which a
    # local cluster never is; its only output here was Ray's constructor-arguments note, once per stage.
    env_vars["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    ray.init(
        address="local",  # a new cluster even when another one runs on this machine (ray.init would join it)
        num_cpus=cfg.resources.cluster_cpus,
        num_gpus=cfg.resources.cluster_gpus,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        # Ray expects as many workers starting at once as the machine has cores (2 here) and warns at
        # every 4x, 5x, ... that many worker processes alive; this cluster declares cluster_cpus on purpose.
        # Ray kills idle worker processes once more workers than this are alive (default: the CPU count);
        # the vLLM engines, learners and controllers count too, so the RL producer's encoding process,
        # warmed while CoT-SFT runs (data/warm.py), was killed idle before RL began and RL's first prompts
        # waited for a cold one (measured: 6.1 s of imports on RL's critical path).
        _system_config={"worker_maximum_startup_concurrency": cfg.resources.cluster_cpus,
                        "num_workers_soft_limit": WORKERS_SOFT_LIMIT_PER_CPU * cfg.resources.cluster_cpus},
        runtime_env={**runtime_env, "worker_process_setup_hook": f"{__name__}.quiet_local_worker"},
        log_to_driver=True,
    )
    return f"started a local Ray cluster on 127.0.0.1 ({cfg.resources.cluster_cpus} logical CPUs)"
