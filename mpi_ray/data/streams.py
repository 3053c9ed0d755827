"""Ray Data streams: Parquet shards -> exactly what a stage's learner or sampler needs.

Decoding, chat formatting, processing and masks run in `map_batches` tasks; each worker process
loads the processor once per stream spec and keeps it (`_encoder`). The encoding tasks carry a
runtime env of their own (ENCODE_POOL_ENV): Ray reuses an idle worker only for a task of the same
runtime env, so they get a worker pool of their own, and the next stream, epoch, rank or stage finds
torch, transformers and the processor loaded there. Without it the stream's read tasks, started
first and many at once, took every idle worker, and 3 of 4 consecutive 512-row streams each started a
fresh process and imported everything again (9-17 s each); with it one process served all four, the
last three in 5.3-5.7 s instead of 6-16 s. (An actor pool would start a fresh process per stream.)
mpi_ray/data/warm.py starts that process ahead for the first learner stage. The set is never
materialized on the driver.

One skip path for every per-row failure: a missing field, a null or undecodable or oversized image,
policy-image marks that do not match the policy images, an image the processor refuses, a sequence
over `max_seq_len` tokens (for RL: either prompt over rollout.max_prompt_len, which vLLM would refuse
for the whole batch), or any other error a row raises. Each is skipped and counted with its id and
reason in a `SampleErrors` actor, or fails the stream at once when `on_bad_sample="fail"`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from mpi_ray.data.encode import BadSample, Encoder
from mpi_ray.data.schema import REQUIRED_TEXT_FIELDS
from mpi_ray.data.shards import shard_paths, verified_paths
from mpi_ray.rewards.combine import check_gold

StageName = Literal["cpt", "sft", "rl"]
# Only a key for Ray's worker pools: encoding tasks reuse each other's processes, nothing else takes them.
ENCODE_POOL_ENV = {"MPI_RAY_WORKER_POOL": "encode"}


@ray.remote(num_cpus=0)
class SampleErrors:
    """Counts skipped samples per stage, with their ids and reasons."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def record(self, stage: str, sample_id: str, reason: str) -> None:
        self.errors.append({"stage": stage, "sample_id": sample_id, "reason": reason})

    def report(self) -> list[dict[str, str]]:
        return list(self.errors)


@dataclass(frozen=True)
class StreamSpec:
    stage: StageName
    model_path: str
    target: Literal["cot", "direct"] = "cot"  # SFT only
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_seq_len: int = 2048
    on_bad_sample: Literal["skip", "fail"] = "skip"


def _check_fields(sample: dict[str, Any]) -> None:
    sample_id = str(sample.get("sample_id") or "<no id>")
    for name in REQUIRED_TEXT_FIELDS:
        if not isinstance(sample.get(name), str):
            raise BadSample(sample_id, f"field '{name}' is missing")


@functools.lru_cache(maxsize=8)
def _encoder(spec: StreamSpec) -> Encoder:
    """The processor, loaded once per worker process and spec."""
    return Encoder(spec.model_path, spec.min_pixels, spec.max_pixels, spec.max_seq_len)


class EncodeBatch:
    """One batch of shard rows -> one output row per usable sample."""

    def __init__(self, spec: StreamSpec, errors: Any = None, keep_ids: frozenset[str] | None = None):
        self.spec = spec
        self.errors = errors
        self.keep_ids = keep_ids  # a learner rank's rows for one epoch; None keeps every row
        self.encoder = _encoder(spec)

    def encode(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        """The stage's row, or None when the sample is not for this stage (e.g. CPT needs a CoT)."""
        spec = self.spec
        _check_fields(sample)
        needs_cot = spec.stage == "cpt" or (spec.stage == "sft" and spec.target == "cot")
        if needs_cot and not sample.get("cot"):
            return None
        base = {"sample_id": sample["sample_id"]}
        if spec.stage == "cpt":
            return {**base, **self.encoder.cpt(sample)}
        if spec.stage == "sft":
            return {**base, **self.encoder.sft(sample, spec.target)}
        try:
            check_gold(sample["dataset"], sample["answer"])
        except ValueError as error:
            raise BadSample(sample["sample_id"], str(error)[:200]) from None
        free = self.encoder.checked_prompt(sample, with_policy=False)
        row = {**base, "dataset": sample["dataset"], "answer": sample["answer"], "truth": sample["truth"],
               "meta": sample["meta"], "prompt": free["prompt"], "images": _png_list(sample["images"])}
        aware = self.encoder.checked_prompt(sample, with_policy=True)
        row["policy_prompt"] = aware["prompt"]
        row["policy_images"] = _png_list(sample["policy_images"]) + _png_list(sample["images"])
        return row

    def __call__(self, batch: pa.Table) -> dict[str, list[Any]]:
        if self.keep_ids is not None:  # before to_pylist: a rank's stream reads every shard and keeps its rows
            batch = batch.filter(pc.is_in(batch["sample_id"], value_set=pa.array(sorted(self.keep_ids), pa.string())))
        rows = []
        for sample in batch.to_pylist():
            try:
                row = self.encode(sample)
            except Exception as exc:
                bad = exc if isinstance(exc, BadSample) else _as_bad_sample(sample, exc)
                if self.spec.on_bad_sample == "fail":
                    raise bad from (None if bad is exc else exc)
                if self.errors is not None:  # recorded before the batch leaves: a task's worker moves on at once
                    ray.get(self.errors.record.remote(self.spec.stage, bad.sample_id, bad.reason))
                continue
            if row is not None:
                rows.append(row)
        if not rows:
            return {}
        return {key: [row[key] for row in rows] for key in rows[0]}


def _as_bad_sample(sample: dict[str, Any], exc: Exception) -> BadSample:
    """Any other error a row raises (a null column, a mark/image mismatch, ...), named with its sample."""
    return BadSample(str(sample.get("sample_id") or "<no id>"), f"{type(exc).__name__}: {str(exc)[:200]}")


def _png_list(blobs: list[bytes] | None) -> list[bytes]:
    return list(blobs or [])


def encode_batch(batch: pa.Table, spec: StreamSpec, errors: Any, keep_ids: frozenset[str] | None) -> dict[str, list[Any]]:
    """The map_batches task."""
    return EncodeBatch(spec, errors, keep_ids)(batch)


ENCODED_BLOCK_BYTES = 8 * 1024 * 1024


def split_rows(data_dir: str, split: str, concurrency: int = 1) -> ray.data.Dataset:
    """A lazy read of a split's shards. Each read_parquet samples its files in Ray tasks first (Ray Data's
    size estimate), so the streams of one stage share one read: CoT-SFT's eight 512-row chunks built
    eight of them, about 2 s of the driver's time before its learners started (measured)."""
    # Ray Data 2.60's datasource V2 lists files in a task that sat 14 s idle (78 ms of CPU) before
    # every stream here; the V1 reader reads the same shards in 0.2 s once a worker is warm.
    ray.data.DataContext.get_current().use_datasource_v2 = False
    # Encoded rows leave a task in blocks of this size: at Ray Data's 128 MB a task's output (a few hundred
    # rows with their pixel patches) was one block, so a stream's first batch waited for all of its rows.
    ray.data.DataContext.get_current().target_max_block_size = ENCODED_BLOCK_BYTES
    # Reads at the encoding's concurrency: a read is ~25 ms against seconds of encoding, and each read
    # task in flight holds a worker process (ten cold ones at a stream's start before this, which also
    # pushed Ray's idle-worker count past its soft limit and got the warmed encoding process killed).
    return ray.data.read_parquet(verified_paths(shard_paths(data_dir, split)), shuffle=None, concurrency=concurrency)


def stage_dataset(
    data_dir: str,
    split: str,
    spec: StreamSpec,
    errors: Any = None,
    batch_size: int = 16,
    concurrency: int = 1,
    sample_ids: list[str] | None = None,
    rows: ray.data.Dataset | None = None,
) -> ray.data.Dataset:
    """A lazy Ray Dataset of the stage's rows, in shard order (deterministic for a dataset).

    `sample_ids` restricts it to those rows (still in shard order): one learner rank's epoch.
    `rows`: the split's read (split_rows) where several streams share one.
    """
    ds = rows if rows is not None else split_rows(data_dir, split, concurrency)
    keep = frozenset(sample_ids) if sample_ids is not None else None
    return ds.map_batches(
        encode_batch,
        fn_kwargs={"spec": spec, "errors": errors, "keep_ids": keep},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.TaskPoolStrategy(size=concurrency),
        num_cpus=1,
        runtime_env={"env_vars": ENCODE_POOL_ENV},
    )


def deterministic_context() -> None:
    """Keep Ray Data's output order equal to the input order (same records, same order, same seed)."""
    ray.data.DataContext.get_current().execution_options.preserve_order = True


def padded_batch(rows: dict[str, np.ndarray], pad_id: int, image_token_id: int) -> dict[str, Any]:
    """Collate learner rows: right-pad ids/labels to the longest row, concatenate pixel patches.

    `mm_token_type_ids` (1 on image tokens) is what makes Qwen2.5-VL compute its 3-D (M-RoPE)
    positions for the image tokens, as vLLM does; without it transformers falls back to 1-D positions
    and the learner trains a different model than the one that samples and serves.
    """
    import torch

    ids = [np.asarray(x) for x in rows["input_ids"]]
    labels = [np.asarray(x) for x in rows["labels"]]
    longest = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    label_tensor = torch.full((len(ids), longest), -100, dtype=torch.long)
    attention = torch.zeros((len(ids), longest), dtype=torch.long)
    for i, (seq, lab) in enumerate(zip(ids, labels)):
        input_ids[i, : len(seq)] = torch.from_numpy(seq.astype(np.int64))
        label_tensor[i, : len(lab)] = torch.from_numpy(lab.astype(np.int64))
        attention[i, : len(seq)] = 1
    pixels = [np.asarray(p) for p in rows["pixel_values"] if np.asarray(p).size]
    grids = [np.asarray(g).reshape(-1, 3) for g in rows["image_grid_thw"] if np.asarray(g).size]
    batch = {"input_ids": input_ids, "labels": label_tensor, "attention_mask": attention}
    if pixels:
        batch["pixel_values"] = torch.from_numpy(np.concatenate(pixels).astype(np.float32))
        batch["image_grid_thw"] = torch.from_numpy(np.concatenate(grids).astype(np.int64))
        batch["mm_token_type_ids"] = (input_ids == image_token_id).long() * attention
    return batch
