"""DAPO dynamic sampling: which groups are kept, filling a batch across tries, and the try limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mpi_ray.config.schema import RLConfig
from mpi_ray.rl.batch import POLICY_AWARE, POLICY_FREE, RolloutGroup, group_by_prompt, make_rollout
from mpi_ray.rl.dynamic_sampling import DynamicSampler, SamplingExhausted, keep_group


def group(prompt_id: str, free: list[float], aware: list[float] | None = None) -> RolloutGroup:
    rollouts = [make_rollout(prompt_id, POLICY_FREE, [1], None, r, 0) for r in free]
    rollouts += [make_rollout(prompt_id, POLICY_AWARE, [2], None, r, 0) for r in aware or []]
    return group_by_prompt(rollouts)[0]


@pytest.mark.parametrize(
    "rewards, kept",
    [([1.0, 1.0, 1.0], False), ([0.0, 0.0], False), ([0.3] * 5, False), ([], False), ([1.0, 0.0], True), ([0.9, 1.0, 0.9], True)],
)
def test_keep_group(rewards: list[float], kept: bool) -> None:
    assert keep_group(rewards) is kept


def test_poro_judges_the_pooled_group() -> None:
    # The policy-free half alone is all 0 (dropped under plain DAPO); one policy-aware success keeps it.
    pooled = group("p0", [0.0, 0.0], [1.0, 0.0])
    assert keep_group(pooled.rewards)
    assert not keep_group([r.reward for r in pooled.rollouts if r.group == POLICY_FREE])


def rounds(*batches: list[RolloutGroup]) -> tuple[Callable[[], list[RolloutGroup]], list[int]]:
    """A candidate source that hands out the given batches in order and counts calls."""
    calls: list[int] = []
    source = iter(batches)

    def next_candidates() -> list[RolloutGroup]:
        calls.append(1)
        return next(source)

    return next_candidates, calls


def test_fills_across_tries_and_truncates() -> None:
    # try 1: 1 of 3 kept; try 2: 2 of 3 kept (3 so far); try 3: 2 of 2 kept (5 >= 4) -> stop, keep 4
    next_candidates, calls = rounds(
        [group("a", [1, 1]), group("b", [1, 0]), group("c", [0, 0])],
        [group("d", [0, 1]), group("e", [1, 1]), group("f", [0.5, 1])],
        [group("g", [0, 1]), group("h", [1, 0])],
        [group("never", [0, 1])],
    )
    filled = DynamicSampler(rollout_batch=4, max_sampling_tries=20).fill(next_candidates)
    assert [g.prompt_id for g in filled.groups] == ["b", "d", "f", "g"]
    assert (filled.tries, filled.candidates, filled.dropped) == (3, 8, 3)
    assert len(calls) == 3


def test_first_try_enough() -> None:
    next_candidates, calls = rounds([group("a", [1, 0]), group("b", [0, 1])])
    filled = DynamicSampler(rollout_batch=2, max_sampling_tries=1).fill(next_candidates)
    assert filled.tries == 1 and len(filled.groups) == 2 and len(calls) == 1


def test_twenty_tries_then_sampling_exhausted() -> None:
    calls = []

    def all_equal_rewards() -> list[RolloutGroup]:
        calls.append(1)
        return [group(f"p{len(calls)}", [1, 1]), group(f"q{len(calls)}", [0, 0])] + (
            [group("lucky", [0, 1])] if len(calls) == 7 else []
        )

    defaults = RLConfig()  # rollout_batch 384, max_sampling_tries 20 (the paper's limit)
    sampler = DynamicSampler(defaults.rollout_batch, defaults.max_sampling_tries)
    with pytest.raises(SamplingExhausted) as raised:
        sampler.fill(all_equal_rewards)
    assert len(calls) == 20
    assert (raised.value.kept, raised.value.needed, raised.value.tries) == (1, 384, 20)
    message = str(raised.value)
    assert "kept 1 of the 384 prompts" in message and "after 20 tries" in message and "stops early" in message


def test_filling_on_the_last_allowed_try_succeeds() -> None:
    # 3 tries allowed; tries 1 and 2 yield nothing, try 3 fills the batch.
    next_candidates, calls = rounds([group("a", [1, 1])], [group("b", [0, 0])], [group("c", [0, 1])])
    filled = DynamicSampler(rollout_batch=1, max_sampling_tries=3).fill(next_candidates)
    assert filled.tries == 3 and [g.prompt_id for g in filled.groups] == ["c"]


@pytest.mark.parametrize("rollout_batch, tries", [(0, 20), (4, 0)])
def test_bad_limits_are_refused(rollout_batch: int, tries: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        DynamicSampler(rollout_batch, tries)
