"""The RL objective on hand-computed values: GRPO advantages, the k1/k2/k3 KL estimators, the
clipped surrogate with clip-higher, GRPO seq-mean vs DAPO token-mean aggregation, the KL
coefficient, and truncated importance sampling."""

from __future__ import annotations

import math

import pytest
import torch

from mpi_ray.rl.objectives import aggregate_loss, group_advantages, kl_penalty, policy_loss

LN2 = math.log(2.0)
LN3 = math.log(3.0)


def approx(value: float) -> pytest.approx:
    return pytest.approx(value, abs=1e-5)


# ---- group advantages ------------------------------------------------------------------------


def test_group_advantages_hand_values() -> None:
    # [1, 0, 0, 0]: mean 0.25; unbiased std = sqrt((0.75^2 + 3 * 0.25^2) / 3) = sqrt(0.25) = 0.5
    #   -> (1 - 0.25) / 0.5 = 1.5 and (0 - 0.25) / 0.5 = -0.5
    # [2, 0]: mean 1; unbiased std = sqrt((1 + 1) / 1) = sqrt(2) -> +-1/sqrt(2)
    first = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), eps=0.0)
    second = group_advantages(torch.tensor([[2.0, 0.0]]), eps=0.0)
    assert first.tolist()[0] == [approx(1.5), approx(-0.5), approx(-0.5), approx(-0.5)]
    assert second.tolist()[0] == [approx(1 / math.sqrt(2)), approx(-1 / math.sqrt(2))]


def test_group_advantages_rows_are_independent_and_eps_applies() -> None:
    # Row 2 is row 1 scaled by 10: same normalized advantages. eps=0.5 on [1, 0, 0, 0]: 0.75 / (0.5 + 0.5) = 0.75
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]])
    advantages = group_advantages(rewards, eps=0.0)
    assert torch.allclose(advantages[0], advantages[1])
    assert group_advantages(rewards[:1], eps=0.5)[0, 0].item() == approx(0.75)


@pytest.mark.parametrize("value", [0.0, 1.0, 0.1, 0.3, -7.25])
def test_group_of_equal_rewards_gets_exactly_zero(value: float) -> None:
    # mean(0.1, 0.1, 0.1) is not exactly 0.1 in floating point; the result must still be exactly 0.
    advantages = group_advantages(torch.full((2, 5), value))
    assert advantages.eq(0).all()


@pytest.mark.parametrize("shape", [(4,), (3, 1), (2, 2, 2)])
def test_group_advantages_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="num_prompts, group"):
        group_advantages(torch.zeros(shape))


# ---- KL estimators ---------------------------------------------------------------------------


def test_kl_estimators_exact_values() -> None:
    # d = ref - logp.  d = ln2: k3 = e^ln2 - ln2 - 1 = 2 - 0.693147 - 1 = 0.306853
    #                  d = -ln2: k3 = 0.5 + 0.693147 - 1 = 0.193147;  d = 0: k3 = 0
    # k1 = logp - ref = -d;  k2 = d^2 / 2 = 0.240227 for |d| = ln2
    logp = torch.zeros(3)
    ref = torch.tensor([LN2, -LN2, 0.0])
    assert kl_penalty(logp, ref, "k3").tolist() == [approx(2 - LN2 - 1), approx(0.5 + LN2 - 1), approx(0.0)]
    assert kl_penalty(logp, ref, "k1").tolist() == [approx(-LN2), approx(LN2), approx(0.0)]
    assert kl_penalty(logp, ref, "k2").tolist() == [approx(LN2**2 / 2), approx(LN2**2 / 2), approx(0.0)]


def test_k3_is_non_negative_and_finite_for_extreme_log_probs() -> None:
    logp = torch.tensor([0.0, -1e4, -50.0])
    ref = torch.tensor([-1e4, 0.0, -50.0])
    kl = kl_penalty(logp, ref, "k3")
    assert torch.isfinite(kl).all() and (kl >= 0).all()


def test_unknown_kl_estimator_is_named() -> None:
    with pytest.raises(ValueError, match="k4"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")  # type: ignore[arg-type]


# ---- clipped surrogate, aggregation --------------------------------------------------------


def hand_batch() -> dict[str, torch.Tensor]:
    """Two responses, clip_low 0.2 / clip_high 0.3 (clip range [0.8, 1.3]).

    row 0, A = +1, ratios [1.0, 1.5, 0.5]:
      r=1.0: min(1.0, 1.0) = 1.0            -> loss -1.0
      r=1.5: min(1.5, 1.3) = 1.3 (clipped)  -> loss -1.3
      r=0.5: min(0.5, 0.8) = 0.5            -> loss -0.5
    row 1, A = -1, ratios [0.5, 1.5, pad]:
      r=0.5: min(-0.5, -0.8) = -0.8 (clipped) -> loss 0.8
      r=1.5: min(-1.5, -1.3) = -1.5           -> loss 1.5
    """
    old = torch.zeros(2, 3)
    logp = torch.log(torch.tensor([[1.0, 1.5, 0.5], [0.5, 1.5, 1.0]]))
    return {
        "logp": logp,
        "old_logp": old,
        "advantages": torch.tensor([1.0, -1.0]),
        "mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
    }


def test_dapo_token_mean_on_hand_batch() -> None:
    # token-mean: (-1 - 1.3 - 0.5 + 0.8 + 1.5) / 5 tokens = -0.5 / 5 = -0.1
    loss, metrics = policy_loss(**hand_batch(), clip_low=0.2, clip_high=0.3, loss_agg="token-mean")
    assert loss.item() == approx(-0.1)
    assert metrics["clip_fraction"] == approx(2 / 5)  # the r=1.5 (A>0) and r=0.5 (A<0) tokens
    assert metrics["ratio_mean"] == approx((1 + 1.5 + 0.5 + 0.5 + 1.5) / 5)
    assert metrics["kl_mean"] == 0.0 and metrics["is_weight_mean"] == 1.0


def test_grpo_seq_mean_token_mean_on_hand_batch() -> None:
    # row means: -2.8 / 3 = -0.933333 and 2.3 / 2 = 1.15; mean over rows = 0.216667 / 2 = 0.108333
    loss, _ = policy_loss(**hand_batch(), clip_low=0.2, clip_high=0.3, loss_agg="seq-mean-token-mean")
    assert loss.item() == approx((-2.8 / 3 + 2.3 / 2) / 2)


def test_aggregation_weighs_long_responses_differently() -> None:
    # row 0: four tokens of 1; row 1: one token of 5 (three padding NaNs that must stay out).
    # token-mean = (4 + 5) / 5 = 1.8;  seq-mean-token-mean = (1 + 5) / 2 = 3
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [5.0, math.nan, math.nan, math.nan]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert aggregate_loss(per_token, mask, "token-mean").item() == approx(1.8)
    assert aggregate_loss(per_token, mask, "seq-mean-token-mean").item() == approx(3.0)


def test_fully_masked_rows_do_not_count_as_sequences() -> None:
    # row 1 has no tokens: seq-mean over the one real row = 2; token-mean = 2
    per_token = torch.tensor([[2.0, 2.0], [9.0, 9.0]])
    mask = torch.tensor([[1, 1], [0, 0]])
    assert aggregate_loss(per_token, mask, "seq-mean-token-mean").item() == approx(2.0)
    assert aggregate_loss(per_token, mask, "token-mean").item() == approx(2.0)


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_with_a_normalizer_add_up_to_the_batch_loss(loss_agg: str) -> None:
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [5.0, 6.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    whole = aggregate_loss(per_token, mask, loss_agg)  # type: ignore[arg-type]
    normalizer = float(mask.sum()) if loss_agg == "token-mean" else 3.0
    parts = [aggregate_loss(per_token[rows], mask[rows], loss_agg, normalizer) for rows in ([0], [1, 2])]  # type: ignore[arg-type]
    assert sum(p.item() for p in parts) == approx(whole.item())


def test_unknown_loss_agg_is_named() -> None:
    with pytest.raises(ValueError, match="seq-sum"):
        aggregate_loss(torch.zeros(1, 1), torch.ones(1, 1), "seq-sum")  # type: ignore[arg-type]


# ---- clip-higher ---------------------------------------------------------------------------


def single_token_loss(ratio: float, advantage: float, clip_low: float, clip_high: float) -> tuple[float, float]:
    """Loss and d loss / d logp for one token with the given ratio."""
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, _ = policy_loss(
        logp, torch.zeros(1, 1), torch.tensor([advantage]), torch.ones(1, 1), clip_low, clip_high, "token-mean"
    )
    loss.backward()
    return loss.item(), logp.grad.item()  # type: ignore[union-attr]


def test_clip_higher_lets_positive_advantages_rise_further() -> None:
    # A = +1, r = 1.25: symmetric 0.2 clips at 1.2 (loss -1.2, no gradient);
    # clip-higher 0.3 bounds at 1.3, so r = 1.25 is unclipped: loss -1.25, d(-r)/dlogp = -r = -1.25
    assert single_token_loss(1.25, 1.0, 0.2, 0.2) == (approx(-1.2), approx(0.0))
    assert single_token_loss(1.25, 1.0, 0.2, 0.3) == (approx(-1.25), approx(-1.25))


def test_clip_low_side_is_unchanged_by_clip_high() -> None:
    # A = -1, r = 0.75: min(-0.75, -0.8) = -0.8 -> loss 0.8, clipped (no gradient) whatever clip_high is;
    # A = -1, r = 0.85 is inside [0.8, ...]: loss 0.85, gradient d(r)/dlogp = 0.85
    for clip_high in (0.2, 0.28, 0.3):
        assert single_token_loss(0.75, -1.0, 0.2, clip_high) == (approx(0.8), approx(0.0))
        assert single_token_loss(0.85, -1.0, 0.2, clip_high) == (approx(0.85), approx(0.85))


# ---- KL coefficient --------------------------------------------------------------------------


def kl_case(kl_coef: float, ref_logp: torch.Tensor | None) -> tuple[float, dict[str, float]]:
    # logp = old_logp = 0 and A = 0: the surrogate is 0, only the KL term remains.
    loss, metrics = policy_loss(
        torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), torch.ones(1, 2), 0.2, 0.3, "token-mean",
        ref_logp=ref_logp, kl_coef=kl_coef,
    )
    return loss.item(), metrics


def test_kl_coefficient_scales_the_k3_term() -> None:
    # both tokens: ref - logp = ln2 -> k3 = 0.306853; kl_coef 0.1 -> loss 0.0306853
    ref = torch.full((1, 2), LN2)
    assert kl_case(0.1, ref)[0] == approx(0.1 * (1 - LN2))
    assert kl_case(0.01, ref)[0] == approx(0.01 * (1 - LN2))


def test_kl_is_a_metric_only_when_the_coefficient_is_zero() -> None:
    # DAPO: no KL in the loss, but the metric still reports it when a reference is given.
    loss, metrics = kl_case(0.0, torch.full((1, 2), LN2))
    assert loss == approx(0.0)
    assert metrics["kl_mean"] == approx(1 - LN2)


def test_kl_coefficient_without_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="ref_logp"):
        kl_case(0.01, None)


# ---- truncated importance sampling -----------------------------------------------------------


def is_case(behavior_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """Two rows of one token, A = +1, logp = old_logp = 0 (surrogate loss -1 per token), cap 2.
    behavior_logp = [-ln3, ln2]: pi_old / pi_behavior = 3 -> capped to 2, and 0.5."""
    logp = torch.zeros(2, 1, requires_grad=True)
    loss, metrics = policy_loss(
        logp, torch.zeros(2, 1), torch.ones(2), torch.ones(2, 1), 0.2, 0.3, "token-mean",
        behavior_logp=torch.tensor([[-LN3], [LN2]]), is_cap=2.0, behavior_mask=behavior_mask,
    )
    loss.backward()
    return loss, metrics, logp.grad  # type: ignore[return-value]


def test_truncated_importance_weights() -> None:
    # weights [2, 0.5]: loss = (-1 * 2 + -1 * 0.5) / 2 = -1.25; gradient per token = -r * w / 2 = [-1, -0.25]
    loss, metrics, grad = is_case()
    assert loss.item() == approx(-1.25)
    assert metrics["is_weight_mean"] == approx(1.25)
    assert grad.flatten().tolist() == [approx(-1.0), approx(-0.25)]


def test_rows_without_behavior_log_probs_weigh_one() -> None:
    # row 1 is policy-aware (no sampler log-probs): weights [2, 1] -> loss (-2 - 1) / 2 = -1.5
    loss, metrics, _ = is_case(behavior_mask=torch.tensor([True, False]))
    assert loss.item() == approx(-1.5)
    assert metrics["is_weight_mean"] == approx(1.5)


def test_importance_weight_is_detached() -> None:
    old = torch.zeros(1, 1, requires_grad=True)
    loss, _ = policy_loss(
        torch.zeros(1, 1), old, torch.ones(1), torch.ones(1, 1), 0.2, 0.3, "token-mean",
        behavior_logp=torch.full((1, 1), -0.5), is_cap=2.0,
    )
    loss.backward()
    # Only the ratio's old_logp path carries gradient: d(-exp(logp - old))/d old = +1 times weight e^0.5
    assert old.grad.item() == approx(math.exp(0.5))  # type: ignore[union-attr]


def test_behavior_log_probs_need_a_cap() -> None:
    with pytest.raises(ValueError, match="is_cap"):
        policy_loss(
            torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), 0.2, 0.3, "token-mean",
            behavior_logp=torch.zeros(1, 1),
        )
