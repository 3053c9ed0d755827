"""Rollouts and the learner batch, shaped so that the PolicyRollout (PoRo) contract holds by
construction (paper Eq. 3).

The contract: PoRo samples G responses from the policy-free prompt (Q, I) and G from the
policy-aware prompt (Q, I, P), and the learner scores and trains on ALL of them given the
policy-free prompt (Q, I) only; advantages are normalized over the 2G rewards of the prompt, and
log-probs sampled under the policy text never enter a ratio or an importance weight.

Flow: the rollout code turns each engine sample into a `Rollout` with `make_rollout` (which drops
the sampler log-probs of policy-aware samples), `group_by_prompt` pools the G policy-free and G
policy-aware responses of a prompt into one `RolloutGroup`, and `build_learner_batch` pairs EVERY
response with the policy-free prompt (Q, I) of its prompt_id and attaches its pooled advantage.

What makes the contract visible:
- a `Rollout` never holds the prompt it was sampled from, so the policy text (Q, I, P) cannot
  reach the learner;
- `build_learner_batch` takes only policy-free prompts;
- `sampler_logp` exists only for policy-free samples: a policy-aware sample's sampler log-probs are
  conditioned on the policy and must never enter a ratio or an importance weight. `Rollout`
  refuses them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import torch

from mpi_ray.rl.objectives import group_advantages

PromptGroup = Literal["policy_free", "policy_aware"]
POLICY_FREE: PromptGroup = "policy_free"  # sampled from (Q, I)
POLICY_AWARE: PromptGroup = "policy_aware"  # sampled from (Q, I, P); PoRo only
PromptT = TypeVar("PromptT")


@dataclass(frozen=True)
class Rollout:
    """One sampled response and what the learner may know about it."""

    prompt_id: str
    group: PromptGroup
    response_ids: tuple[int, ...]
    reward: float
    weight_version: int  # the policy weights the sampler used
    sampler_logp: tuple[float, ...] | None = None  # policy-free samples only

    def __post_init__(self) -> None:
        if self.group not in (POLICY_FREE, POLICY_AWARE):
            raise ValueError(f"rollout group must be {POLICY_FREE!r} or {POLICY_AWARE!r}, got {self.group!r}")
        if self.group == POLICY_AWARE and self.sampler_logp is not None:
            raise ValueError(
                f"prompt {self.prompt_id}: a policy-aware rollout must not carry sampler log-probs; they are"
                " conditioned on the policy text and must never enter a ratio (use make_rollout)"
            )
        if self.sampler_logp is not None and len(self.sampler_logp) != len(self.response_ids):
            raise ValueError(
                f"prompt {self.prompt_id}: {len(self.sampler_logp)} sampler log-probs for {len(self.response_ids)} tokens"
            )
        if not math.isfinite(self.reward):
            raise ValueError(f"prompt {self.prompt_id}: reward {self.reward} is not finite")


def make_rollout(
    prompt_id: str,
    group: PromptGroup,
    response_ids: Sequence[int],
    sampler_logprobs: Sequence[float] | None,
    reward: float,
    weight_version: int,
) -> Rollout:
    """A Rollout from one engine sample. The engine's log-probs are kept for policy-free samples
    (truncated importance sampling of stale batches) and dropped for policy-aware ones."""
    sampler_logp = None
    if group == POLICY_FREE and sampler_logprobs is not None:
        sampler_logp = tuple(float(x) for x in sampler_logprobs)
    return Rollout(
        prompt_id=prompt_id,
        group=group,
        response_ids=tuple(int(token) for token in response_ids),
        reward=float(reward),
        weight_version=int(weight_version),
        sampler_logp=sampler_logp,
    )


@dataclass(frozen=True)
class RolloutGroup:
    """Every response to one prompt: G policy-free, plus G policy-aware under PoRo (the pooled 2G)."""

    prompt_id: str
    rollouts: tuple[Rollout, ...]

    def __post_init__(self) -> None:
        others = {r.prompt_id for r in self.rollouts} - {self.prompt_id}
        if others:
            raise ValueError(f"group {self.prompt_id} holds rollouts of other prompts {sorted(others)}")

    @property
    def rewards(self) -> list[float]:
        return [r.reward for r in self.rollouts]

    def count(self, group: PromptGroup) -> int:
        return sum(r.group == group for r in self.rollouts)


def group_by_prompt(rollouts: Iterable[Rollout]) -> list[RolloutGroup]:
    """Pool rollouts by prompt_id across both group types, in order of first appearance."""
    by_prompt: dict[str, list[Rollout]] = {}
    for rollout in rollouts:
        by_prompt.setdefault(rollout.prompt_id, []).append(rollout)
    return [RolloutGroup(prompt_id, tuple(members)) for prompt_id, members in by_prompt.items()]


def pooled_advantages(groups: Sequence[RolloutGroup], eps: float = 1e-6) -> list[tuple[float, ...]]:
    """Per group, the GRPO advantage of each rollout (in the group's order), normalized over the
    whole group: the pooled 2G under PoRo, the G policy-free responses for plain GRPO/DAPO."""
    advantages = []
    for group in groups:
        rewards = torch.tensor([group.rewards], dtype=torch.float64)
        advantages.append(tuple(group_advantages(rewards, eps)[0].tolist()))
    return advantages


def check_composition(groups: Sequence[RolloutGroup], uses_poro: bool) -> None:
    """Plain GRPO/DAPO groups are all policy-free; PoRo groups are G policy-free + G policy-aware.
    A PoRo batch with no policy-aware half would silently train as plain GRPO, so it is refused."""
    for group in groups:
        free, aware = group.count(POLICY_FREE), group.count(POLICY_AWARE)
        if free == 0:
            raise ValueError(f"prompt {group.prompt_id}: no policy-free rollouts")
        if uses_poro and aware != free:
            raise ValueError(f"prompt {group.prompt_id}: PoRo needs as many policy-aware as policy-free rollouts, got {aware} and {free}")
        if not uses_poro and aware:
            raise ValueError(f"prompt {group.prompt_id}: {aware} policy-aware rollouts in a batch without PoRo")


@dataclass(frozen=True)
class LearnerSample(Generic[PromptT]):
    """What the learner trains on for one response: the POLICY-FREE prompt of its prompt_id, the
    response tokens, and the pooled advantage. The learner computes logp / old_logp / ref_logp of
    `response_ids` given `prompt`; `behavior_logp` (policy-free samples only) may weight tokens."""

    prompt_id: str
    prompt: PromptT  # always the policy-free (Q, I) prompt, whichever group sampled the response
    response_ids: tuple[int, ...]
    advantage: float
    group: PromptGroup
    weight_version: int
    behavior_logp: tuple[float, ...] | None


def build_learner_batch(
    groups: Sequence[RolloutGroup],
    policy_free_prompts: Mapping[str, PromptT],
    uses_poro: bool,
    eps: float = 1e-6,
) -> list[LearnerSample[PromptT]]:
    """Pair every response, policy-free or policy-aware, with the policy-free prompt of its prompt_id."""
    check_composition(groups, uses_poro)
    missing = [g.prompt_id for g in groups if g.prompt_id not in policy_free_prompts]
    if missing:
        raise KeyError(f"no policy-free prompt for prompt ids {missing[:5]}")
    samples = []
    for group, advantages in zip(groups, pooled_advantages(groups, eps)):
        prompt = policy_free_prompts[group.prompt_id]
        for rollout, advantage in zip(group.rollouts, advantages):
            samples.append(
                LearnerSample(
                    prompt_id=rollout.prompt_id,
                    prompt=prompt,
                    response_ids=rollout.response_ids,
                    advantage=advantage,
                    group=rollout.group,
                    weight_version=rollout.weight_version,
                    behavior_logp=rollout.sampler_logp,
                )
            )
    return samples
