"""The rollout buffer: ObjectRefs of finished rollout groups, per step, tagged with the weight version
they were sampled with and their group type; and the latest published weights.

It is also where the asynchrony is bounded. The producer may sample step s only with weights of
version >= s - max_staleness (`wait_for_weights`), so it never runs more than max_staleness steps
ahead of the learners (back-pressure), and with max_staleness 0 every batch is strictly on-policy.
The learners take step s with `take` (every rank gets the same entry), and publish version s + 1
after their update with `publish_weights`.

Where the stage starts is the learners' call: rank 0 says `begin(step, prompts_drawn)` (0, 0 on a
fresh start; the checkpoint's position on a resumed one, after publishing the checkpoint's weights
as that step's version), and the producer waits for it before sampling anything.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import ray


@dataclass
class BufferedBatch:
    """One step's rollouts, still in the object store."""

    step: int
    weight_version: int
    groups: dict[str, Any]  # group type ("policy_free", "policy_aware") -> ObjectRef of list[Rollout]
    prompts: Any  # ObjectRef of {prompt_id: policy-free prompt}
    stats: dict[str, Any] = field(default_factory=dict)  # rollout metrics of the step
    end: str | None = None  # set instead of rollouts when the producer stops (reason)


class RolloutBufferState:
    """The buffer's logic as a plain class, so it is testable without Ray; RolloutBuffer is the actor."""

    def __init__(self, max_staleness: int, world_size: int):
        self.max_staleness = max_staleness
        self.world_size = world_size  # an entry is dropped once every learner rank took it
        self.entries: dict[int, BufferedBatch] = {}
        self.taken: dict[int, int] = {}
        self.version = 0
        # the update info of the latest weights (object_store: the chunk refs nested inside, so Ray passes
        # them on unresolved), or None when the learners sent them straight into the engines (nccl, ipc)
        self.weights: Any = None
        self.engines: list[Any] | None = None  # the rollout engine actors, for a direct transfer
        self.probe: list[float] | None = None  # the learner's probe log-probs under those weights
        self.changed = asyncio.Condition()
        self.end: str | None = None
        self.start: tuple[int, int] | None = None  # (first step, prompts drawn before it)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # producer side
    async def wait_for_begin(self) -> tuple[int, int]:
        async with self.changed:
            await self.changed.wait_for(lambda: self.start is not None)
        assert self.start is not None
        return self.start

    async def set_engines(self, engines: list[Any]) -> None:
        self.engines = engines
        await self._notify()

    async def wait_for_engines(self) -> list[Any]:
        async with self.changed:
            await self.changed.wait_for(lambda: self.engines is not None)
        assert self.engines is not None
        return self.engines

    async def wait_for_weights(self, step: int, have_version: int) -> tuple[int, Any, list[float] | None]:
        """Block until weights recent enough for `step` are published; returns (version, update info,
        probe log-probs), with None for both when the producer's `have_version` is already the latest."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.version >= step - self.max_staleness)
        if self.version == have_version:
            return self.version, None, None
        return self.version, self.weights, self.probe

    async def put(self, batch: BufferedBatch) -> None:
        if batch.weight_version < batch.step - self.max_staleness:
            raise ValueError(f"step {batch.step} sampled with weights v{batch.weight_version}: older than "
                             f"rollout.max_staleness={self.max_staleness} allows")
        self.entries[batch.step] = batch
        await self._notify()

    async def finish(self, reason: str) -> None:
        """The producer stops (done, dynamic sampling exhausted, or failed): learners waiting get `reason`."""
        self.end = reason
        await self._notify()

    # learner side
    async def begin(self, step: int, prompts_drawn: int) -> None:
        self.start = (step, prompts_drawn)
        await self._notify()

    async def take(self, step: int) -> BufferedBatch:
        async with self.changed:
            await self.changed.wait_for(lambda: step in self.entries or self.end is not None)
        batch = self.entries.get(step)
        if batch is None:
            return BufferedBatch(step=step, weight_version=-1, groups={}, prompts=None, end=self.end)
        self.taken[step] = self.taken.get(step, 0) + 1
        if self.taken[step] == self.world_size:
            del self.entries[step], self.taken[step]
        return batch

    async def publish_weights(self, version: int, weights: list[Any], probe: list[float]) -> None:
        if version <= self.version:
            raise ValueError(f"weight version {version} is not newer than the published {self.version}")
        self.version, self.weights, self.probe = version, weights, probe
        await self._notify()


RolloutBuffer = ray.remote(num_cpus=0)(RolloutBufferState)
