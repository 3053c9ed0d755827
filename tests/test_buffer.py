"""The rollout buffer's rules, on its plain class (no Ray): back-pressure and the staleness bound, every
learner rank served the same step, the producer's end reaching a waiting learner, where the stage begins."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from mpi_ray.rollout.buffer import BufferedBatch, RolloutBufferState


async def blocked(task: asyncio.Task) -> bool:
    """Whether `task` is still waiting after 0.2 s; it keeps waiting either way."""
    try:
        await asyncio.wait_for(asyncio.shield(task), 0.2)
    except TimeoutError:
        return True
    return False


async def result(waiting: Awaitable[Any]) -> Any:
    """What a call that must not block (any more) returns; a buffer that blocks it fails here instead of hanging."""
    return await asyncio.wait_for(waiting, 2)


def batch(step: int, version: int) -> BufferedBatch:
    return BufferedBatch(step=step, weight_version=version, groups={}, prompts=None)


def test_on_policy_the_producer_waits_for_the_steps_own_weights() -> None:
    async def check() -> None:
        buffer = RolloutBufferState(max_staleness=0, world_size=1)
        assert await result(buffer.wait_for_weights(step=0, have_version=0)) == (0, None, None)  # the start weights it holds
        waiting = asyncio.create_task(buffer.wait_for_weights(step=1, have_version=0))
        assert await blocked(waiting)  # back-pressure: no sampling step 1 with version 0
        await buffer.publish_weights(1, ["weights v1"], [-0.5])
        assert await result(waiting) == (1, ["weights v1"], [-0.5])
        assert await result(buffer.wait_for_weights(step=1, have_version=1)) == (1, None, None)  # already has the latest

    asyncio.run(check())


def test_with_staleness_one_the_producer_runs_one_version_ahead_not_two() -> None:
    async def check() -> None:
        buffer = RolloutBufferState(max_staleness=1, world_size=1)
        assert await result(buffer.wait_for_weights(step=1, have_version=0)) == (0, None, None)  # step s with version s - 1
        waiting = asyncio.create_task(buffer.wait_for_weights(step=2, have_version=0))
        assert await blocked(waiting)  # but not with s - 2
        await buffer.publish_weights(1, ["weights v1"], [-0.5])
        assert await result(waiting) == (1, ["weights v1"], [-0.5])

    asyncio.run(check())


@pytest.mark.parametrize("max_staleness", [0, 1])
def test_put_refuses_a_batch_older_than_allowed(max_staleness: int) -> None:
    async def check() -> None:
        buffer = RolloutBufferState(max_staleness=max_staleness, world_size=1)
        await buffer.put(batch(step=3, version=3 - max_staleness))
        with pytest.raises(ValueError, match=f"max_staleness={max_staleness}"):
            await buffer.put(batch(step=4, version=3 - max_staleness))
        assert await result(buffer.take(3)) == batch(step=3, version=3 - max_staleness)

    asyncio.run(check())


def test_every_rank_takes_the_step_then_it_is_dropped() -> None:
    async def check() -> None:
        buffer = RolloutBufferState(max_staleness=0, world_size=2)
        early = asyncio.create_task(buffer.take(0))
        assert await blocked(early)  # a learner waits for its step
        await buffer.put(batch(step=0, version=0))
        assert await result(early) == batch(step=0, version=0)
        assert await result(buffer.take(0)) == batch(step=0, version=0)  # the second rank gets the same entry
        assert await blocked(asyncio.create_task(buffer.take(0)))  # served to both: gone

    asyncio.run(check())


def test_finish_wakes_a_waiting_learner_with_the_reason() -> None:
    async def check() -> None:
        buffer = RolloutBufferState(max_staleness=0, world_size=1)
        waiting = asyncio.create_task(buffer.take(5))
        assert await blocked(waiting)
        await buffer.finish("early stop at step 5: no group with differing rewards")
        entry = await result(waiting)
        assert (entry.step, entry.end, entry.groups) == (5, "early stop at step 5: no group with differing rewards", {})

    asyncio.run(check())


def test_begin_tells_the_producer_where_the_stage_starts() -> None:
    async def check() -> None:
        buffer = RolloutBufferState(max_staleness=0, world_size=1)
        waiting = asyncio.create_task(buffer.wait_for_begin())
        assert await blocked(waiting)  # the producer samples nothing before the learners say where
        await buffer.begin(4, 32)  # resumed: step 4, 32 prompts drawn before it
        assert await result(waiting) == (4, 32)

    asyncio.run(check())


def test_publish_weights_refuses_a_version_that_is_not_newer() -> None:
    async def check() -> None:
        buffer = RolloutBufferState(max_staleness=0, world_size=1)
        await buffer.publish_weights(2, ["weights v2"], [-0.5])
        for version in (1, 2):
            with pytest.raises(ValueError, match=f"weight version {version} is not newer than the published 2"):
                await buffer.publish_weights(version, ["old"], [-0.5])
        assert await result(buffer.wait_for_weights(step=2, have_version=0)) == (2, ["weights v2"], [-0.5])

    asyncio.run(check())
