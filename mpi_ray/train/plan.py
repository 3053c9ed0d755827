"""The data plan of a learner stage: which rows each rank reads in each epoch, and how many steps.

Every epoch is a seeded permutation of the stage's rows dealt round-robin to the ranks, cut to equal
length (DDP needs every rank to step the same number of times); each rank's stream then yields its
rows in shard order, and the learner loop draws them through a seeded shuffle buffer
(`shuffle_buffer` of the stage). Pure and deterministic: the same config gives the same plan on
every run and restart.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


from mpi_ray.data.clevr_policy.general import GENERAL_DATASET
from mpi_ray.data.shards import read_shard, shard_paths


@dataclass(frozen=True)
class DataPlan:
    assignments: list[list[list[str]]]  # [epoch][rank] -> sample ids, in shard order
    micro_steps_per_epoch: int
    total_micro_steps: int

    @property
    def epochs(self) -> int:
        return len(self.assignments)


def eligible_ids(data_dir: str, split: str, needs_cot: bool, policy_rows_only: bool = False) -> list[str]:
    """Sample ids of the split in shard order: only those with a CoT when the stage needs one, and only
    policy rows (not CoT-SFT's general replay rows) when `policy_rows_only` (VM-CPT, RL)."""
    ids: list[str] = []
    for path in shard_paths(data_dir, split):
        table = read_shard(path, columns=["sample_id", "cot", "dataset"])
        for sample_id, cot, dataset in zip(*(table[c].to_pylist() for c in ("sample_id", "cot", "dataset"))):
            if (cot or not needs_cot) and not (policy_rows_only and dataset == GENERAL_DATASET):
                ids.append(sample_id)
    return ids


FIRST_CHUNK_ROWS = 128  # an epoch's first stream: the learner's first batch waits for all of it (see below)


def stream_chunks(rank_ids: list[str], chunk_rows: int, micro_batch: int,
                  first_rows: int = FIRST_CHUNK_ROWS) -> list[list[str]]:
    """A rank's epoch cut into consecutive streams of whole batches: a short first one of `first_rows`,
    then `chunk_rows` each (the last one may be shorter).

    Why a short first one: the learner's first batch waits until the shuffle buffer (sft.shuffle_buffer,
    256 rows) is full or the stream has ended: a 512-row first stream put about 4 s of encoding before
    CoT-SFT's first step, with the RL engines starting beside it.

    Why not one stream per epoch: Ray Data's executor runs in the learner's process, and once a stream
    has filled its object-store budget with no task in flight it polls in a loop that never waits
    (streaming_executor_state.process_completed_tasks only calls ray.wait with tasks active), taking
    the GIL from the training thread: measured, CoT-SFT on one learner slowed from 0.16 s to 0.7-1.1 s
    a step after about 170 steps of an 8,192-row epoch, and py-spy found the executor thread active in
    every sample. The learner reads each chunk to the end ahead of training (loop._epoch_batches), so
    its executor ends once the chunk is encoded; the chunk bounds the batches held in memory."""
    def whole(rows: int) -> int:
        return max(1, math.ceil(rows / micro_batch)) * micro_batch

    if not rank_ids:
        return []
    first, size = min(whole(first_rows), whole(chunk_rows)), whole(chunk_rows)
    return [rank_ids[:first]] + [rank_ids[start:start + size] for start in range(first, len(rank_ids), size)]


def make_plan(ids: list[str], world: int, micro_batch: int, epochs: float, seed: int, max_micro_steps: int | None) -> DataPlan:
    per_rank = len(ids) // world
    micro_per_epoch = per_rank // micro_batch
    if micro_per_epoch == 0:
        raise ValueError(f"{len(ids)} rows cannot give {world} workers one batch of {micro_batch} each")
    total = int(epochs * micro_per_epoch)
    if max_micro_steps is not None:
        total = min(total, max_micro_steps)
    total = max(total, 1)
    position = {sample_id: index for index, sample_id in enumerate(ids)}
    assignments = []
    for epoch in range(math.ceil(total / micro_per_epoch)):
        order = list(ids)
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        # the rows this epoch's steps consume: a run bounded by max_micro_steps (VM-CPT's 64 steps of a
        # 1,024-step epoch) streams and encodes only those, not the whole epoch
        steps = min(micro_per_epoch, total - epoch * micro_per_epoch)
        ranks = [sorted(order[r::world][: steps * micro_batch], key=position.__getitem__) for r in range(world)]
        assignments.append(ranks)
    return DataPlan(assignments, micro_per_epoch, total)
