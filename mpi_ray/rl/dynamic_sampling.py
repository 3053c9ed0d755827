"""DAPO dynamic sampling: keep only prompt groups whose rewards differ (a group of equal rewards has
zero advantage everywhere and only dilutes the batch), and sample again until the rollout batch is
full. With PoRo the pooled 2G group is judged, so a prompt the policy-free path always fails is kept
as long as the policy-aware path sometimes succeeds.

The paper allows at most 20 tries per step (reference §4.5); a run that cannot fill its batch stops
early (Table 6, "*"). Here that is `SamplingExhausted`, which the RL stage turns into an early stop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class HasRewards(Protocol):
    @property
    def rewards(self) -> Sequence[float]: ...


GroupT = TypeVar("GroupT", bound=HasRewards)


class SamplingExhausted(RuntimeError):
    """Dynamic sampling tried `tries` candidate batches and kept fewer than `needed` prompts."""

    def __init__(self, kept: int, needed: int, tries: int) -> None:
        self.kept, self.needed, self.tries = kept, needed, tries
        super().__init__(
            f"DAPO dynamic sampling kept {kept} of the {needed} prompts a step needs after {tries} tries"
            f" (rl.max_sampling_tries={tries}): the other groups all had equal rewards. The RL stage stops"
            " early here, as the paper's DAPO runs do (Table 6, '*')."
        )


def keep_group(rewards: Sequence[float]) -> bool:
    """True when the group's rewards are not all equal (so its advantages are not all zero)."""
    return any(reward != rewards[0] for reward in rewards)


@dataclass(frozen=True)
class FilledBatch(Generic[GroupT]):
    groups: list[GroupT]  # exactly rollout_batch kept groups
    tries: int  # candidate batches drawn
    candidates: int  # groups seen across those tries
    dropped: int  # groups filtered out as all-equal


class DynamicSampler(Generic[GroupT]):
    """Fills one step's batch from successive candidate batches, `max_sampling_tries` at most."""

    def __init__(self, rollout_batch: int, max_sampling_tries: int) -> None:
        if rollout_batch < 1 or max_sampling_tries < 1:
            raise ValueError(f"rollout_batch={rollout_batch} and max_sampling_tries={max_sampling_tries} must be >= 1")
        self.rollout_batch = rollout_batch
        self.max_sampling_tries = max_sampling_tries

    def fill(self, next_candidates: Callable[[], Iterable[GroupT]]) -> FilledBatch[GroupT]:
        """Call `next_candidates()` (one rollout round: groups with `.rewards`) until `rollout_batch`
        groups are kept. Kept groups beyond the batch are discarded, as DAPO does."""
        kept: list[GroupT] = []
        candidates = dropped = 0
        for tries in range(1, self.max_sampling_tries + 1):
            for group in next_candidates():
                candidates += 1
                if keep_group(group.rewards):
                    kept.append(group)
                else:
                    dropped += 1
            if len(kept) >= self.rollout_batch:
                return FilledBatch(kept[: self.rollout_batch], tries, candidates, dropped)
        raise SamplingExhausted(len(kept), self.rollout_batch, self.max_sampling_tries)
