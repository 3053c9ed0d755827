"""Typed configuration of the whole pipeline (pydantic v2), validated before any Ray work starts.

Every section forbids unknown keys; cross-field rules (DAPO has no KL, the rollout pool must fit
the declared resources, ...) live in the validators at the bottom so a bad combination is named
with its key and what is allowed.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# The one list of stage names, in pipeline order: run.stages accepts exactly these, and the pipeline
# orders and imports (mpi_ray.stages.<name>) its stages from it.
Stage = Literal["model", "data", "cpt", "sft", "rl", "eval", "export", "serve"]
STAGES: tuple[str, ...] = get_args(Stage)


class Section(BaseModel):
    # Finite numbers only: .inf epochs or a NaN weight would validate and then poison a run.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's true is not 1: `rollout.engines=true` is a mistake, not one engine."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation is not bool and bool not in get_args(annotation):
                raise ValueError(f"expected {_type_name(annotation)}, got the boolean {value}")
        return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _non_negative_resources(resources: dict[str, float]) -> dict[str, float]:
    negative = {name: amount for name, amount in resources.items() if amount < 0}
    if negative:
        raise ValueError(f"custom resource amounts must be >= 0, got {negative}")
    return resources


class TinyModelConfig(Section):
    size: Literal["xs", "s", "m"] = "s"
    seed: int = 0


class ModelConfig(Section):
    # A local HF folder or a hub id; None builds the tiny local model into the run directory.
    name_or_path: str | None = None
    tiny: TinyModelConfig = TinyModelConfig()
    dtype: Literal["float32", "bfloat16"] = "float32"
    min_pixels: int = Field(56 * 56, gt=0)
    max_pixels: int = Field(224 * 224, gt=0)


class ClevrDataConfig(Section):
    depth: int = Field(6, ge=1, le=10)
    variant: Literal["T", "M"] = "T"
    policies: int = Field(10, ge=1)
    train_per_policy: int = Field(40, ge=1)
    test: int = Field(200, ge=1)
    val: int = Field(200, ge=0)  # validation scenes (their own stream): choose hyper-parameters with eval.split=val
    general: int = Field(100, ge=0)  # policy-free attribute questions (the forgetting check)
    general_replay: int = Field(0, ge=0)  # such questions with a CoT in the train split, replayed by CoT-SFT only
    general_think: Literal["summary", "echo"] = "summary"  # the replay's think: what the image holds, or the asked values
    cot_fraction: float = Field(0.125, gt=0.0, le=1.0)
    image_size: int = Field(128, ge=28)


class GtaDataConfig(Section):
    train: int = Field(451, ge=1)
    test: int = Field(106, ge=1)
    from_gta: str | None = None  # a GTA benchmark folder (dataset.json + image/) to convert


class DataConfig(Section):
    dataset: Literal["clevr_policy", "gta_policy"] = "clevr_policy"
    dir: str | None = None  # existing shards; None generates them into the run directory
    seed: int = 0
    clevr: ClevrDataConfig = ClevrDataConfig()
    gta: GtaDataConfig = GtaDataConfig()
    on_bad_sample: Literal["skip", "fail"] = "skip"
    # Rows per Ray Data stream of a learner rank's epoch (rounded up to whole batches); see
    # mpi_ray/train/plan.py stream_chunks for why an epoch is not one stream
    stream_chunk_rows: int = Field(512, ge=1)
    # Processes that load the encoder (imports + processor) for a learner stage while the stage before
    # it runs (mpi_ray/data/warm.py); 0: the stage's first tasks start them cold
    warm_encode_workers: int = Field(1, ge=0)


class LoraConfig(Section):
    enabled: bool = False
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class OptimConfig(Section):
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)

    @field_validator("betas")
    @classmethod
    def _betas_in_unit_interval(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"each Adam beta must be in [0, 1), got {list(betas)}")
        return betas
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = Field(1.0, gt=0)


class StageConfig(Section):
    """One learner stage (CPT, SFT): what it trains on and how."""

    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # caps the schedule (CPU smoke runs)
    workers: int | None = Field(None, ge=1)  # None: resources.learner_workers
    batch_size_per_worker: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_seq_len: int = Field(2048, ge=16)
    optim: OptimConfig = OptimConfig()
    lora: LoraConfig = LoraConfig()
    checkpoint_every: int = Field(50, ge=1)
    # Each rank reads its rows (in shard order) through a seeded shuffle buffer of this many encoded
    # rows, so the order within an epoch depends on run.seed and the epoch; 0 reads in shard order.
    # Memory: this many rows with their pixel patches per rank.
    shuffle_buffer: int = Field(256, ge=0)


class SftConfig(StageConfig):
    target: Literal["cot", "direct"] = "cot"


class OverlongConfig(Section):
    enabled: bool | None = None  # None: as rl.algorithm implies (on for DAPO / PoRo-DAPO, off for GRPO)
    buffer: int = Field(64, ge=0)  # the last `buffer` tokens before max_response_len are penalized linearly
    penalty: float = Field(1.0, ge=0)


class RewardConfig(Section):
    accuracy_weight: float = Field(0.9, ge=0)
    format_weight: float = Field(0.1, ge=0)
    format_pattern: str = r"<think>.*</think>.*\\boxed\{.*\}.*"

    @field_validator("format_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:  # a broken pattern would score every response 0
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return pattern


class RLConfig(Section):
    algorithm: Literal["grpo", "dapo", "poro-grpo", "poro-dapo"] = "poro-grpo"
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    workers: int | None = Field(None, ge=1)  # None: resources.learner_workers
    rollout_batch: int = Field(384, ge=1)  # prompts per RL step
    group_size: int = Field(5, ge=2)  # G; PoRo adds G policy-aware samples per prompt
    update_batch: int = Field(32, ge=1)  # sequences per optimizer step (all workers)
    micro_batch_per_worker: int = Field(4, ge=1)  # sequences per forward/backward on one worker
    prompt_rows: Literal["non_cot", "all"] = "non_cot"  # the paper runs RL on the rows without a CoT
    ppo_epochs: int = Field(1, ge=1)
    clip_low: float = Field(0.2, gt=0, lt=1)
    clip_high: float = Field(0.3, gt=0, lt=1)
    kl_coef: float = Field(0.01, ge=0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    # None: as rl.algorithm implies. DAPO averages over every token of the batch (its token-level
    # policy-gradient loss); GRPO averages per sequence, then over sequences.
    loss_agg: Literal["token-mean", "seq-mean-token-mean"] | None = None
    dynamic_sampling: bool = False
    max_sampling_tries: int = Field(20, ge=1)
    overlong: OverlongConfig = OverlongConfig()
    reward: RewardConfig = RewardConfig()
    optim: OptimConfig = OptimConfig(lr=1e-6, warmup_ratio=0.0, schedule="constant")
    checkpoint_every: int = Field(10, ge=1)  # steps; a re-run of the stage resumes from the newest

    @model_validator(mode="after")
    def _algorithm_defaults(self) -> "RLConfig":
        """Fill what the algorithm implies; an explicit setting wins."""
        if self.loss_agg is None:
            self.loss_agg = "token-mean" if self.is_dapo else "seq-mean-token-mean"
        if self.overlong.enabled is None:
            self.overlong.enabled = self.is_dapo
        return self

    @property
    def is_dapo(self) -> bool:
        return self.algorithm.endswith("dapo")

    @property
    def uses_poro(self) -> bool:
        return self.algorithm.startswith("poro-")


class RolloutConfig(Section):
    engines: int = Field(2, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_prompt_len: int = Field(2048, ge=16)
    max_response_len: int = Field(512, ge=1)
    max_staleness: int = Field(0, ge=0)  # 0 = strictly on-policy (the paper's setting)
    is_truncation: float = Field(2.0, ge=1.0)  # truncated importance-sampling cap for stale batches
    tensor_parallel: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.05, gt=0, le=1)  # on CPU: fraction of host memory
    kv_cache_gib: int = Field(1, ge=1)  # VLLM_CPU_KVCACHE_SPACE on CPU
    enforce_eager: bool = True
    # vLLM's engine core in the actor's own process (VLLM_ENABLE_V1_MULTIPROCESSING=0): an engine starts
    # in 19 s instead of 50-68 s on 2 CPU cores (no second process importing vLLM again). On GPUs set it
    # false: the separate engine-core process overlaps scheduling with the model's work.
    engine_core_in_process: bool = True
    # vLLM's weight-transfer protocol (rollout/weight_transfer.py): object_store anywhere; nccl (learners and
    # engines on separate GPUs) and ipc (colocated on the same GPUs) send straight into idle engines
    weight_sync: Literal["object_store", "nccl", "ipc"] = "object_store"
    weight_sync_chunk_mb: int = Field(256, ge=1)  # object_store: the most an engine holds beside its model
    # Engines share the learners' GPUs (fractional resources.gpus_per_engine/learner) and free their memory
    # between rollout and update with vLLM's sleep mode (level 1: weights to host, KV cache dropped),
    # waking for the weight transfer. GPU only: vLLM's CPU worker has no sleep mode.
    colocate: bool = False
    max_num_seqs: int = Field(64, ge=1)
    verify_sync: bool = True  # after each sync every engine's probe log-probs must match the learner's
    verify_sync_tol: float = Field(0.05, gt=0)  # max |engine - learner| log-prob per probe token
    max_engine_restarts: int = Field(3, ge=0)  # per step: a dead engine is replaced and its prompts re-issued
    # Start the RL engines while the stage before RL trains (rollout/prestart.py): worth it where that stage
    # leaves cores idle (one learner thread on CPU); on GPUs the engines would hold GPUs the learners need.
    prestart: bool = False


class LearnerConfig(Section):
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: Literal[2, 3] = 2
    precision: Literal["fp32", "bf16"] = "fp32"
    gradient_checkpointing: bool = False


class ResourcesConfig(Section):
    """What the job may use; the rollout pool and learners must fit inside."""

    use_gpu: bool = False
    cluster_cpus: int = Field(8, ge=1)  # logical CPUs of the local cluster / the cluster's budget
    cluster_gpus: int = Field(0, ge=0)
    learner_workers: int = Field(2, ge=1)
    cpus_per_learner: float = Field(1, gt=0)
    gpus_per_learner: float = Field(0, ge=0)
    cpus_per_engine: float = Field(1, gt=0)
    gpus_per_engine: float = Field(0, ge=0)
    # Custom Ray resources each learner worker / rollout engine also asks for: they pin the roles to
    # node types on a heterogeneous cluster (nodes started with e.g. --resources='{"learner_node": 8}').
    learner_resources: dict[str, float] = {}
    engine_resources: dict[str, float] = {}

    _resources_non_negative = field_validator("learner_resources", "engine_resources")(_non_negative_resources)


class EvalConfig(Section):
    suites: list[Literal["policy_free", "in_context", "override", "referral", "efficiency", "forgetting"]] = [
        "policy_free", "in_context", "override", "referral", "efficiency", "forgetting",
    ]
    max_samples: int | None = Field(200, ge=1)  # per suite and split
    # The policy questions' split for policy_free and in_context: "val" while choosing hyper-parameters
    # (ClevrPolicy's validation scenes), "test" for the figures a report states
    split: Literal["test", "val"] = "test"
    max_response_len: int = Field(512, ge=1)
    # The stage table: checkpoints of these stages (when the run made them) are evaluated too; the base
    # model ("model") gives the in-context row, the final checkpoint gets every suite.
    compare: list[Literal["model", "cpt", "sft", "rl"]] = ["model", "sft", "rl"]
    engines: int = Field(1, ge=1)  # vLLM engines of the batch inference (1 keeps prefill timings clean on CPU)
    efficiency_samples: int = Field(16, ge=1)
    efficiency_repeats: int = Field(3, ge=1)  # prefill timings per prompt; the median is reported
    general_jsonl: str | None = None  # forgetting benchmark for real models (README: format); None: the data's general split
    judge_url: str | None = None  # optional OpenAI-compatible endpoint for the referral LLM judge
    judge_model: str | None = None  # model id at judge_url (None: the first one /v1/models lists)
    judge_samples: int = Field(100, ge=1)  # the paper averages 100 responses per dataset


class ServeConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    model_id: str = "mpi-ray-policy-free"
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: int = Field(16, ge=1)
    use_gpu: bool = False
    max_model_len: int = Field(4096, ge=16)
    max_images: int = Field(4, ge=1)  # per request
    max_image_bytes: int = Field(4 * 1024 * 1024, ge=1024)  # an image part larger than this gets 400
    max_image_pixels: int = Field(4096 * 4096, ge=64)  # width x height; larger gets 400
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # a request body larger gets 413 (declared or chunked)


class DrillConfig(Section):
    """Fault drills, off by default: a real process is killed at a chosen point so that tests and
    benchmarks can watch the job survive it."""

    kill_engine_at_rl_step: int | None = Field(None, ge=1)  # rollout engine 0 dies while sampling this RL step (1-based)
    # The last CPT learner rank dies once, in the micro-step after this one (after its checkpoint, if one falls here)
    kill_cpt_learner_after_step: int | None = Field(None, ge=1)


class RunConfig(Section):
    name: str = "default"
    dir: str = Field("runs/default", min_length=1)  # on a multi-node cluster: shared storage every node sees
    seed: int = 0
    stages: list[Stage] = ["model", "data"]
    ray_address: str | None = None  # None: RAY_ADDRESS if set (ray job submit), else a local cluster
    # Where metrics go: jsonl (the stages' own logs, always) and TensorBoard event files per stage.
    trackers: list[Literal["jsonl", "tensorboard"]] = ["jsonl", "tensorboard"]

    @field_validator("trackers")
    @classmethod
    def _jsonl_always(cls, trackers: list[str]) -> list[str]:
        if "jsonl" not in trackers:
            raise ValueError("must include jsonl: the stages' own logs, which every other tracker mirrors")
        return trackers


class PipelineConfig(Section):
    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    learner: LearnerConfig = LearnerConfig()
    cpt: StageConfig = StageConfig(optim=OptimConfig(lr=1e-5))
    sft: SftConfig = SftConfig(optim=OptimConfig(lr=1e-4), lora=LoraConfig(enabled=True))
    rl: RLConfig = RLConfig()
    rollout: RolloutConfig = RolloutConfig()
    resources: ResourcesConfig = ResourcesConfig()
    eval: EvalConfig = EvalConfig()
    serve: ServeConfig = ServeConfig()
    drill: DrillConfig = DrillConfig()

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "PipelineConfig":
        problems = cross_field_problems(self)
        if problems:  # every problem at once, one a line
            raise ValueError("\n  ".join(problems))
        return self


def cross_field_problems(cfg: PipelineConfig) -> list[str]:
    """Combinations that each section alone cannot reject; every message names its keys."""
    problems: list[str] = []
    rl, rollout, res = cfg.rl, cfg.rollout, cfg.resources
    if rl.is_dapo and rl.kl_coef != 0:
        problems.append(f"rl.kl_coef={rl.kl_coef} with rl.algorithm={rl.algorithm}: DAPO has no reference KL; set rl.kl_coef=0")
    if not rl.is_dapo and rl.dynamic_sampling:
        problems.append(f"rl.dynamic_sampling=true needs rl.algorithm in (dapo, poro-dapo), got {rl.algorithm}")
    if rl.overlong.enabled and rl.overlong.buffer > rollout.max_response_len:
        problems.append(f"rl.overlong.buffer={rl.overlong.buffer} must be <= rollout.max_response_len={rollout.max_response_len}")
    if rl.clip_high < rl.clip_low:
        problems.append(f"rl.clip_high={rl.clip_high} must be >= rl.clip_low={rl.clip_low}")
    if cfg.rl.reward.accuracy_weight + cfg.rl.reward.format_weight <= 0:
        problems.append("rl.reward.accuracy_weight + rl.reward.format_weight must be > 0")
    if cfg.learner.precision == "bf16" and not res.use_gpu:
        problems.append("learner.precision=bf16 needs resources.use_gpu=true (CPU learners run fp32)")
    if rollout.weight_sync in ("nccl", "ipc") and not cfg.resources.use_gpu:
        problems.append(f"rollout.weight_sync={rollout.weight_sync} needs GPUs (resources.use_gpu=true); use object_store on CPU")
    if rollout.weight_sync in ("nccl", "ipc") and rollout.max_staleness > 0:
        problems.append(f"rollout.weight_sync={rollout.weight_sync} sends straight into the engines, which must be idle: "
                        "it needs rollout.max_staleness=0 (object_store overlaps with any staleness)")
    if rollout.colocate and not cfg.resources.use_gpu:
        problems.append("rollout.colocate=true needs GPUs: vLLM's CPU worker has no sleep mode (it ignores sleep and "
                        "wake_up), so a colocated engine would keep its memory through the update; set rollout.colocate=false")
    if rollout.colocate and rollout.max_staleness > 0:
        problems.append("rollout.colocate=true sleeps the engines while the learners update, so they cannot sample ahead: "
                        "it needs rollout.max_staleness=0")
    if rollout.colocate and cfg.resources.use_gpu and res.gpus_per_engine + res.gpus_per_learner > 1:
        problems.append(f"rollout.colocate=true shares each GPU between a learner and an engine: resources.gpus_per_learner="
                        f"{res.gpus_per_learner} + gpus_per_engine={res.gpus_per_engine} must be <= 1")
    if rollout.prestart and (rollout.tensor_parallel > 1 or rollout.colocate):
        problems.append("rollout.prestart starts single-device engines beside the previous stage's learners: not with "
                        "rollout.tensor_parallel > 1 or rollout.colocate=true; set rollout.prestart=false")
    if rollout.weight_sync == "object_store" and not rollout.engine_core_in_process and rollout.tensor_parallel == 1:
        problems.append("rollout.weight_sync=object_store reads the weights inside vLLM's worker, which must be a Ray "
                        "process: set rollout.engine_core_in_process=true, or use nccl/ipc on GPUs")
    problems.extend(_rl_batch_problems(cfg))
    if res.use_gpu and (res.gpus_per_learner <= 0 or res.gpus_per_engine <= 0):
        problems.append("resources.use_gpu=true needs resources.gpus_per_learner > 0 and resources.gpus_per_engine > 0")
    if cfg.model.min_pixels > cfg.model.max_pixels:
        problems.append(f"model.min_pixels={cfg.model.min_pixels} must be <= model.max_pixels={cfg.model.max_pixels}")
    problems.extend(_resource_problems(cfg))
    return problems


def _rl_batch_problems(cfg: PipelineConfig) -> list[str]:
    """A step's sequences split into whole update batches, and those into whole micro-batches per worker."""
    rl = cfg.rl
    workers = rl.workers or cfg.resources.learner_workers
    sequences = rl.rollout_batch * rl.group_size * (2 if rl.uses_poro else 1)
    if sequences % rl.update_batch:
        return [f"rl.rollout_batch={rl.rollout_batch} x rl.group_size={rl.group_size}"
                f"{' x 2 (PoRo)' if rl.uses_poro else ''} = {sequences} sequences a step must be a multiple of rl.update_batch={rl.update_batch}"]
    if rl.update_batch % workers:
        return [f"rl.update_batch={rl.update_batch} must be a multiple of the {workers} RL learner workers (rl.workers or resources.learner_workers)"]
    if (rl.update_batch // workers) % rl.micro_batch_per_worker:
        return [f"rl.update_batch={rl.update_batch} / {workers} workers = {rl.update_batch // workers} sequences per worker must be a "
                f"multiple of rl.micro_batch_per_worker={rl.micro_batch_per_worker}"]
    return []


def _resource_problems(cfg: PipelineConfig) -> list[str]:
    res, rollout = cfg.resources, cfg.rollout
    engines = rollout.engines
    learners = max(stage.workers or res.learner_workers for stage in (cfg.cpt, cfg.sft, cfg.rl))
    problems = []
    cpus = engines * res.cpus_per_engine + learners * res.cpus_per_learner
    if cpus > res.cluster_cpus:
        problems.append(
            f"rollout.engines={engines} x resources.cpus_per_engine={res.cpus_per_engine} + {learners} learner workers"
            f" (resources.learner_workers or a stage's workers) x resources.cpus_per_learner={res.cpus_per_learner} = {cpus} CPUs exceeds "
            f"resources.cluster_cpus={res.cluster_cpus}; allowed: at most {res.cluster_cpus}"
        )
    engine_gpus = engines * res.gpus_per_engine * rollout.tensor_parallel
    learner_gpus = learners * res.gpus_per_learner
    gpus = engine_gpus + learner_gpus  # colocation = fractional GPUs (e.g. 0.5 + 0.5): Ray packs them
    if gpus > res.cluster_gpus:
        problems.append(
            f"rollout.engines={engines} (x{rollout.tensor_parallel} tensor parallel, {res.gpus_per_engine} GPU each) and "
            f"{learners} learner workers ({res.gpus_per_learner} GPU each) need {gpus} GPUs but "
            f"resources.cluster_gpus={res.cluster_gpus}"
        )
    return problems
