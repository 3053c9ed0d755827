"""The RL objective in one place: GRPO / DAPO advantages, the reference KL, and the clipped
policy-gradient loss that PoRo-GRPO and PoRo-DAPO (paper Eq. 3) share.

The PoRo contract (the policy text P guides sampling only; the model learns to act without it):
`logp`, `old_logp` and `ref_logp` are ALWAYS the learner's log-probs of the response tokens given
the POLICY-FREE prompt (Q, I), for the policy-free and the policy-aware responses alike. The
sampler's policy-conditioned log-probs never enter a ratio; the only sampler log-probs this module
ever sees are `behavior_logp` of policy-free samples, and those only weight a token (truncated
importance sampling), never form the PPO ratio. `mpi_ray.rl.batch` builds inputs that keep this
contract.

Shapes: per-token tensors are [batch, tokens] (one row per response, padded), `mask` marks the real
response tokens, `advantages` are per response [batch].
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

KlEstimator = Literal["k1", "k2", "k3"]
LossAgg = Literal["token-mean", "seq-mean-token-mean"]
# exp() of a log-ratio past this overflows float32 long before it means anything.
MAX_LOG_RATIO = 20.0


def group_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO advantages: (r - mean) / (std + eps) within each row (one row = one prompt's group).

    `rewards` is [num_prompts, group]. With PoRo the caller passes the pooled group of 2G per prompt
    (G policy-free + G policy-aware responses); plain GRPO/DAPO passes the G policy-free ones. The
    std is the unbiased sample std (as GRPO implementations use). A group whose rewards are all equal
    carries no signal and gets exactly 0 (not a rounding residue divided by eps).
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [num_prompts, group] with group >= 2, got shape {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    advantages = (rewards - mean) / (std + eps)
    all_equal = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    return torch.where(all_equal, torch.zeros_like(advantages), advantages)


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: KlEstimator = "k3") -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from log-probs of sampled tokens.

    k1 = logp - ref_logp;  k2 = (logp - ref_logp)^2 / 2;  k3 = exp(ref - logp) - (ref - logp) - 1
    (k3 is the non-negative, low-variance estimator; the reference's §4.6 default).
    """
    log_ratio = (ref_logp - logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"kl estimator must be one of k1, k2, k3, got {estimator!r}")


def aggregate_loss(per_token: Tensor, mask: Tensor, loss_agg: LossAgg, normalizer: float | None = None) -> Tensor:
    """Reduce a [batch, tokens] loss over the masked tokens.

    token-mean (DAPO): sum over every unmasked token of the batch / number of unmasked tokens, so
    long responses weigh by their length. seq-mean-token-mean (GRPO): mean over each response's
    tokens, then mean over the responses that have at least one token.
    `normalizer` replaces the denominator (tokens, resp. responses) when this call sees one
    micro-batch of a larger update batch, so the micro-batch losses add up to the batch loss.
    """
    mask = mask.bool()
    masked = torch.where(mask, per_token, torch.zeros_like(per_token))  # where, not *: NaN padding stays out
    if loss_agg == "token-mean":
        denominator = mask.sum() if normalizer is None else torch.tensor(float(normalizer))
        return masked.sum() / denominator.clamp(min=1)
    if loss_agg == "seq-mean-token-mean":
        tokens_per_seq = mask.sum(dim=1)
        seq_means = masked.sum(dim=1) / tokens_per_seq.clamp(min=1)
        denominator = (tokens_per_seq > 0).sum() if normalizer is None else torch.tensor(float(normalizer))
        return seq_means.sum() / denominator.clamp(min=1)
    raise ValueError(f"loss_agg must be token-mean or seq-mean-token-mean, got {loss_agg!r}")


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    mask = mask.bool()
    count = int(mask.sum())
    return float(torch.where(mask, values, torch.zeros_like(values)).sum()) / count if count else 0.0


def truncated_is_weight(old_logp: Tensor, behavior_logp: Tensor, is_cap: float, behavior_mask: Tensor | None) -> Tensor:
    """min(pi_old / pi_behavior, is_cap) per token, detached; rows outside behavior_mask weigh 1."""
    weight = torch.exp((old_logp - behavior_logp).clamp(max=MAX_LOG_RATIO)).clamp(max=is_cap).detach()
    if behavior_mask is None:
        return weight
    return torch.where(behavior_mask.bool().unsqueeze(1), weight, torch.ones_like(weight))


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float,
    loss_agg: LossAgg,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: KlEstimator = "k3",
    behavior_logp: Tensor | None = None,
    is_cap: float | None = None,
    behavior_mask: Tensor | None = None,
    normalizer: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The clipped surrogate loss (to minimize) and its metrics.

    Per token: -min(r * A, clip(r, 1 - clip_low, 1 + clip_high) * A) + kl_coef * KL, with
    r = exp(logp - old_logp); clip_high > clip_low is DAPO's clip-higher. All of logp, old_logp and
    ref_logp are the learner's log-probs on the policy-free prompt (Q, I) (see the module docstring).

    Truncated importance sampling for stale batches: when `behavior_logp` (the sampler's log-probs,
    which exist only for policy-free samples) is given, each token's loss, KL included, is multiplied
    by min(exp(old_logp - behavior_logp), is_cap), detached; it corrects the expectation from the
    sampler's policy to pi_old. `behavior_mask` [batch] marks the rows that have behavior log-probs
    (the policy-free ones); the other rows (policy-aware) weigh 1. `normalizer`: see aggregate_loss.
    """
    if kl_coef > 0 and ref_logp is None:
        raise ValueError(f"kl_coef={kl_coef} needs ref_logp (the reference model's log-probs)")
    mask = mask.bool()
    log_ratio = (logp - old_logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    per_seq_advantage = advantages.to(logp.dtype).unsqueeze(1)
    unclipped = ratio * per_seq_advantage
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * per_seq_advantage
    per_token = -torch.minimum(unclipped, clipped)

    metrics = {
        "clip_fraction": _masked_mean((clipped < unclipped).float(), mask),
        "ratio_mean": _masked_mean(ratio.detach(), mask),
        "kl_mean": 0.0,
        "is_weight_mean": 1.0,
    }
    if ref_logp is not None:
        kl = kl_penalty(logp, ref_logp, kl_estimator)
        metrics["kl_mean"] = _masked_mean(kl.detach(), mask)
        if kl_coef > 0:
            per_token = per_token + kl_coef * kl
    if behavior_logp is not None:
        if is_cap is None:
            raise ValueError("behavior_logp needs is_cap (rollout.is_truncation): truncated IS must be truncated")
        weight = truncated_is_weight(old_logp, behavior_logp, is_cap, behavior_mask)
        metrics["is_weight_mean"] = _masked_mean(weight, mask)
        per_token = per_token * weight

    loss = aggregate_loss(per_token, mask, loss_agg, normalizer)
    metrics["loss"] = float(loss.detach())
    return loss, metrics
