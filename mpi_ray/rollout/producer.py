"""The rollout producer: an actor that keeps the rollout pool busy ahead of the learners.

Per step: wait in the buffer for weights recent enough (back-pressure, max_staleness), install them
in every engine if newer (weight sync), draw prompts, sample G responses from the policy-free prompt
(Q, I) and, with PoRo, G from the policy-aware prompt (Q, I, P), score them in Ray tasks, pool them
per prompt (dynamic sampling keeps the pooled groups whose rewards differ), and hand the step to the
buffer as ObjectRefs tagged with the weight version and the group type.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray

from mpi_ray.config.schema import PipelineConfig
from mpi_ray.model.loading import image_bounds
from mpi_ray.rewards.tasks import score_in_tasks
from mpi_ray.rl.batch import POLICY_AWARE, POLICY_FREE, Rollout, RolloutGroup, group_by_prompt, make_rollout
from mpi_ray.rl.dynamic_sampling import DynamicSampler, SamplingExhausted
from mpi_ray.rl.overlong import shaped_reward
from mpi_ray.rollout.buffer import BufferedBatch
from mpi_ray.rollout.pool import RolloutPool


@dataclass
class RolloutJob:
    model_path: str
    cfg: dict[str, Any]  # the PipelineConfig, as JSON
    prompts: Any  # a Ray Dataset of RL prompt rows (mpi_ray.data.streams, stage "rl")
    total_steps: int
    max_images: int  # images in the largest prompt (policy images + query images)
    engines: list[Any] | None = None  # started ahead (rollout.prestart) from a checkpoint of the same architecture


class PromptSource:
    """RL prompt rows from the Ray Data stream, epoch after epoch, locally shuffled with a per-epoch seed."""

    def __init__(self, dataset: Any, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0
        self.rows = self._epoch()

    def _epoch(self) -> Iterator[dict[str, Any]]:
        batches = self.dataset.iter_batches(batch_size=32, batch_format="pyarrow", local_shuffle_buffer_size=256,
                                            local_shuffle_seed=self.seed + self.epoch)
        for batch in batches:
            yield from batch.to_pylist()

    def prime(self) -> None:
        """Read the first row now (the stream's start: its tasks, the shuffle buffer); the order is unchanged."""
        first = next(self.rows, None)
        if first is not None:
            self.rows = itertools.chain([first], self.rows)

    def skip(self, count: int) -> None:
        """Pass over the rows a checkpointed run had already drawn (same seeds, same order)."""
        self.take(count)

    def take(self, count: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        empty_epochs = 0
        while len(rows) < count:
            row = next(self.rows, None)
            if row is not None:
                rows.append(row)
                empty_epochs = 0
                continue
            empty_epochs += 1
            if empty_epochs > 1:
                raise RuntimeError("the RL prompt stream is empty (no usable rows in the train split)")
            self.epoch += 1
            self.rows = self._epoch()
        return rows


@dataclass
class Round:
    """One sampling round: its pooled groups and what the step's metrics need."""

    groups: list[RolloutGroup]
    prompts: dict[str, dict[str, Any]]  # prompt_id -> policy-free prompt
    records: list[dict[str, Any]] = field(default_factory=list)  # one per sample: group, reward, accuracy, ...
    tokens: int = 0
    generate_s: float = 0.0
    reward_s: float = 0.0


def _group_stats(records: list[dict[str, Any]]) -> dict[str, float]:
    stats: dict[str, float] = {}
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_group[record["group"]].append(record)
    for group, members in by_group.items():
        for key in ("reward", "accuracy", "format", "length", "truncated", "prompt_images"):
            stats[f"{group}/{key}"] = sum(float(m[key]) for m in members) / len(members)
    return {**stats, **_poro_stats(records)}


def _poro_stats(records: list[dict[str, Any]]) -> dict[str, float]:
    """What the policy-aware group adds, as shares of all prompts: `poro/free_unsolved`, the prompts
    no policy-free sample scores on (plain GRPO learns nothing about the answer there), and
    `poro/rescued`, those of them a policy-aware sample scores on (the signal PoRo pools in)."""
    solved: dict[str, dict[str, bool]] = defaultdict(dict)
    for record in records:
        by_group = solved[record["prompt"]]
        by_group[record["group"]] = by_group.get(record["group"], False) or record["accuracy"] > 0
    pooled = [groups for groups in solved.values() if POLICY_AWARE in groups and POLICY_FREE in groups]
    if not pooled:
        return {}
    unsolved = [groups for groups in pooled if not groups[POLICY_FREE]]
    return {"poro/free_unsolved": len(unsolved) / len(pooled),
            "poro/rescued": sum(groups[POLICY_AWARE] for groups in unsolved) / len(pooled)}


@ray.remote(num_cpus=0, max_concurrency=2)
class RolloutProducer:
    def __init__(self, job: RolloutJob, buffer: Any):
        self.job, self.buffer = job, buffer
        self.cfg = PipelineConfig.model_validate(job.cfg)
        self.rl, self.rollout = self.cfg.rl, self.cfg.rollout
        self.serial = 0
        self.pool: RolloutPool | None = None

    def run(self) -> dict[str, Any]:
        """Produce every step, then tell the buffer why it stopped. Returns a summary."""
        try:
            self.pool = RolloutPool(self.job.model_path, self.rollout, self.cfg.resources, self.cfg.run.seed,
                                    self.job.max_images,
                                    pixel_bounds=image_bounds(self.cfg.model.min_pixels, self.cfg.model.max_pixels),
                                    started=self.job.engines)
            ray.get(self.buffer.set_engines.remote(self.pool.engines))  # for a direct (nccl, ipc) transfer
            source = PromptSource(self.job.prompts, self.cfg.run.seed)
            source.prime()  # the stream starts while the learners start, not after
            first_step, prompts_drawn = ray.get(self.buffer.wait_for_begin.remote())
            source.skip(prompts_drawn)
            for step in range(first_step, self.job.total_steps):
                try:
                    self._produce(step, source)
                except SamplingExhausted as stop:
                    ray.get(self.buffer.finish.remote(f"early stop at step {step}: {stop}"))
                    return {"steps": step, "early_stop": str(stop), "engine_restarts": self.pool.restarts}
            ray.get(self.buffer.finish.remote("done"))
            return {"steps": self.job.total_steps, "early_stop": None, "engine_restarts": self.pool.restarts}
        except BaseException as error:
            ray.get(self.buffer.finish.remote(f"the rollout producer failed: {type(error).__name__}: {error}"))
            raise

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def _produce(self, step: int, source: PromptSource) -> None:
        assert self.pool is not None
        waited = time.perf_counter()
        version, update, probe = ray.get(self.buffer.wait_for_weights.remote(step, self.pool.version))
        waited = time.perf_counter() - waited
        sync_s, sync_diff = self.pool.take_weights(update, version, probe) if version != self.pool.version else (0.0, None)
        if self.rollout.colocate:
            self.pool.wake_up()  # everything back on the GPU for sampling; asleep again once the step is sampled
        rounds: list[Round] = []

        def next_round() -> list[RolloutGroup]:
            kill = 0 if step + 1 == self.cfg.drill.kill_engine_at_rl_step and not rounds else None
            rounds.append(self._round(source.take(self.rl.rollout_batch), kill))
            return rounds[-1].groups

        if self.rl.dynamic_sampling:
            filled = DynamicSampler(self.rl.rollout_batch, self.rl.max_sampling_tries).fill(next_round)
            groups, tries, dropped = filled.groups, filled.tries, filled.dropped
        else:
            groups, tries, dropped = next_round(), 1, 0
        prompts = {pid: prompt for r in rounds for pid, prompt in r.prompts.items()}
        kept = {g.prompt_id for g in groups}
        by_type: dict[str, list[Rollout]] = {POLICY_FREE: [], POLICY_AWARE: []}
        for group in groups:
            for rollout in group.rollouts:
                by_type[rollout.group].append(rollout)
        generate_s = sum(r.generate_s for r in rounds)
        stats = {
            **_group_stats([rec for r in rounds for rec in r.records]),
            "weight_version": version, "weight_sync_s": sync_s, "weight_sync_probe_diff": sync_diff, "wait_for_weights_s": waited,
            "sampling_tries": tries, "prompts_drawn": len(prompts), "groups_kept": len(groups), "groups_dropped": dropped,
            "rollout_tokens": sum(r.tokens for r in rounds), "generate_s": generate_s,
            "reward_s": sum(r.reward_s for r in rounds),
            "rollout_tokens_per_s": sum(r.tokens for r in rounds) / max(generate_s, 1e-9),
            "engine_restarts": self.pool.restarts,
            "drawn_ids": [pid.rsplit("@", 1)[0] for pid in prompts],  # the data-order log (rl/data_order.jsonl)
        }
        batch = BufferedBatch(
            step=step, weight_version=version,
            groups={kind: ray.put(rollouts) for kind, rollouts in by_type.items() if rollouts},
            prompts=ray.put({pid: prompts[pid] for pid in kept}), stats=stats,
        )
        if self.rollout.colocate:
            self.pool.sleep()  # the learners update while the engines hold no GPU memory
        ray.get(self.buffer.put.remote(batch))

    def _round(self, rows: list[dict[str, Any]], kill_engine: int | None) -> Round:
        assert self.pool is not None
        prompt_ids = []
        for row in rows:
            self.serial += 1
            prompt_ids.append(f"{row['sample_id']}@{self.serial}")
        requests = [(POLICY_FREE, pid, row, {"prompt": row["prompt"], "images": row["images"]})
                    for pid, row in zip(prompt_ids, rows)]
        if self.rl.uses_poro:
            requests += [(POLICY_AWARE, pid, row, {"prompt": row["policy_prompt"], "images": row["policy_images"]})
                         for pid, row in zip(prompt_ids, rows)]
        start = time.perf_counter()
        samples = self.pool.generate([request for *_, request in requests], self.rl.group_size, kill_engine)
        generate_s = time.perf_counter() - start
        items = [{"dataset": row["dataset"], "answer": row["answer"], "truth": row["truth"],
                  "texts": [s["text"] for s in prompt_samples]} for (_, _, row, _), prompt_samples in zip(requests, samples)]
        start = time.perf_counter()
        scores = score_in_tasks(items, self.rl.reward, chunks=max(1, self.rollout.engines))
        reward_s = time.perf_counter() - start

        rollouts, records, tokens = [], [], 0
        max_len = self.rollout.max_response_len
        for (group, pid, _, _), prompt_samples, prompt_scores in zip(requests, samples, scores):
            for sample, score in zip(prompt_samples, prompt_scores):
                length = len(sample["token_ids"])
                tokens += length
                reward = shaped_reward(score["reward"], length, max_len, self.rl.overlong)
                rollouts.append(make_rollout(pid, group, sample["token_ids"], sample["logprobs"], reward,
                                             self.pool.version))
                records.append({"group": group, "prompt": pid, "reward": reward, "accuracy": score["accuracy"], "format": score["format"],
                                "length": length, "truncated": sample["finish_reason"] == "length",
                                "prompt_images": sample["prompt_images"]})
        prompts = {pid: {"prompt": row["prompt"], "images": row["images"]} for pid, row in zip(prompt_ids, rows)}
        return Round(group_by_prompt(rollouts), prompts, records, tokens, generate_s, reward_s)
